package statuspage

import (
	_ "embed"
	"html/template"
	"time"
)

//go:embed page.html
var pageHTML string

// moment is a time with the "now" it is shown relative to.
type moment struct{ Now, T time.Time }

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago":   ago,
	"stamp": stamp,
	"at":    func(now, t time.Time) moment { return moment{now, t} },
}).Parse(pageHTML))
