package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

type object = map[string]json.RawMessage

// dialect is how one layout reads nginx-upsync's server parameters; each
// reader returns the value and whether it is set.
type dialect struct {
	count   func(f object, key string) (int, bool, error)
	timeout func(f object) (time.Duration, bool, error)
	flag    func(f object, key string) (bool, bool, error)
}

// upsyncParams reads them as nginx-upsync-module does. The module (cJSON)
// matches keys case-insensitively and takes a number or a string of
// decimal digits for each parameter; so does this, so that its users
// switch without touching their keys. Where the module silently falls back
// to a default for a bad value, the instance is dropped here instead: a
// value that cannot be mapped exactly is never guessed at. Unknown keys
// are ignored, as the module does. Unset parameters take the Rules' values
// (note: the module's own defaults are max_fails=2, fail_timeout=10).
var upsyncParams = dialect{count: upsyncCount, timeout: upsyncTimeout, flag: upsyncFlag}

// plainParams reads them strictly: exact keys, plain JSON integers, the
// flags as 0, 1, true or false.
var plainParams = dialect{count: jsonobj.Int, timeout: plainTimeout, flag: plainFlag}

// decodeAddressed reads an entry named "<ip>:<port>" whose value holds
// server parameters; noun names the entry in errors.
func decodeAddressed(dir, name string, value []byte, noun string, d dialect) (registry.Instance, error) {
	in := registry.Instance{Service: dir, ID: name, Healthy: true}
	host, port, err := SplitHostPort(name)
	if err != nil {
		return in, fmt.Errorf("%s %w", noun, err)
	}
	in.Address, in.Port = host, port
	in.Params, err = d.params(value)
	return in, err
}

// params reads the parameters; an empty (or white space) value sets none.
func (d dialect) params(value []byte) (registry.Params, error) {
	var p registry.Params
	if len(bytes.TrimSpace(value)) == 0 {
		return p, nil
	}
	f, err := jsonobj.Object(value)
	if err != nil {
		return p, err
	}
	for _, c := range []struct {
		key    string
		lo, hi int
		dst    **int
	}{
		{"weight", 1, upstream.MaxWeight, &p.Weight},
		{"max_fails", 0, upstream.MaxMaxFails, &p.MaxFails},
		{"max_conns", 0, upstream.MaxMaxConns, &p.MaxConns},
	} {
		n, ok, err := d.count(f, c.key)
		if err != nil {
			return p, err
		}
		if !ok {
			continue
		}
		if n < c.lo || n > c.hi {
			return p, fmt.Errorf("%s %d out of range %d-%d", c.key, n, c.lo, c.hi)
		}
		*c.dst = &n
	}
	if t, ok, err := d.timeout(f); err != nil {
		return p, err
	} else if ok {
		p.FailTimeout = &t
	}
	for _, c := range []struct {
		key string
		dst **bool
	}{{"backup", &p.Backup}, {"down", &p.Down}} {
		b, ok, err := d.flag(f, c.key)
		if err != nil {
			return p, err
		}
		if ok {
			*c.dst = &b
		}
	}
	return p, nil
}

// seconds bounds a fail_timeout in whole seconds before multiplying, so a
// huge count cannot wrap around into a plausible duration.
func seconds(n int) (time.Duration, error) {
	maxSec := int(upstream.MaxFailTimeout / time.Second)
	if n < 0 || n > maxSec {
		return 0, fmt.Errorf("fail_timeout %d out of range 0-%d seconds", n, maxSec)
	}
	return time.Duration(n) * time.Second, nil
}

func plainTimeout(f object) (time.Duration, bool, error) {
	n, ok, err := jsonobj.Int(f, "fail_timeout")
	if err != nil || !ok {
		return 0, false, err
	}
	d, err := seconds(n)
	return d, err == nil, err
}

// plainFlag accepts nginx-upsync's 0 and 1 as well as JSON booleans.
func plainFlag(f object, key string) (bool, bool, error) {
	if jsonobj.Kind(f[key]) == "number" {
		n, _, err := jsonobj.Int(f, key)
		if err != nil || n < 0 || n > 1 {
			return false, false, fmt.Errorf("%s %s: want 0, 1, true or false", key, jsonobj.Clip(string(f[key])))
		}
		return n == 1, true, nil
	}
	return jsonobj.Bool(f, key)
}

func upsyncCount(f object, key string) (int, bool, error) {
	v, err := jsonobj.FoldField(f, key)
	if err != nil {
		return 0, false, err
	}
	return upsyncInt(key, v)
}

// upsyncInt reads a parameter as nginx-upsync does: a JSON number that is
// a whole number, or a string of ASCII decimal digits. null is unset.
func upsyncInt(key string, v json.RawMessage) (int, bool, error) {
	switch k := jsonobj.Kind(v); k {
	case "", "null":
		return 0, false, nil
	case "number":
		n, err := wholeNumber(v)
		if err != nil {
			return 0, false, fmt.Errorf("%s %s: %w", key, jsonobj.Clip(string(v)), err)
		}
		return n, true, nil
	case "string":
		s, err := jsonobj.DecodeString(v)
		if err != nil || !asciiDigits(s, 9) {
			return 0, false, fmt.Errorf("%s %s is not a whole number", key, jsonobj.Clip(string(v)))
		}
		n, _ := strconv.Atoi(s)
		return n, true, nil
	default:
		return 0, false, fmt.Errorf("%s is %s, want a number", key, jsonobj.Article(k))
	}
}

// wholeNumber accepts a JSON number that is exactly an integer in the
// 32-bit range: 3, 3.0 and 3e0 are 3; 2.5, 1e40 and -0.5 are refused.
func wholeNumber(v json.RawMessage) (int, error) {
	if n, err := strconv.ParseInt(string(v), 10, 32); err == nil {
		return int(n), nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f != float64(int32(f)) {
		return 0, errors.New("not a 32-bit whole number")
	}
	return int(f), nil
}

// upsyncTimeout reads fail_timeout: whole seconds as a number or a digit
// string, or a string with one nginx time unit, "30s", "2m", "1h". The
// upper bound is checked before multiplying, so a huge count cannot wrap
// around into a plausible duration.
func upsyncTimeout(f object) (time.Duration, bool, error) {
	const key = "fail_timeout"
	v, err := jsonobj.FoldField(f, key)
	if err != nil {
		return 0, false, err
	}
	if jsonobj.Kind(v) != "string" {
		n, ok, err := upsyncInt(key, v)
		if err != nil || !ok {
			return 0, false, err
		}
		d, err := seconds(n)
		return d, err == nil, err
	}
	s, err := jsonobj.DecodeString(v)
	if err != nil {
		return 0, false, fmt.Errorf("%s %s: %w", key, jsonobj.Clip(string(v)), err)
	}
	unit := time.Second
	for suffix, u := range map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour} {
		if d, ok := strings.CutSuffix(s, suffix); ok {
			s, unit = d, u
			break
		}
	}
	if !asciiDigits(s, 9) {
		return 0, false, fmt.Errorf("%s %s: want whole seconds, or digits with one unit s, m or h", key, jsonobj.Clip(string(v)))
	}
	maxSec := int(upstream.MaxFailTimeout / time.Second)
	n, _ := strconv.Atoi(s)
	if n > maxSec/int(unit/time.Second) {
		return 0, false, fmt.Errorf("%s %s out of range 0-%ds", key, jsonobj.Clip(string(v)), maxSec)
	}
	return time.Duration(n) * unit, true, nil
}

// upsyncFlag reads down or backup: 0, 1, "0", "1", true or false.
func upsyncFlag(f object, key string) (bool, bool, error) {
	v, err := jsonobj.FoldField(f, key)
	if err != nil {
		return false, false, err
	}
	k := jsonobj.Kind(v)
	if k == "boolean" {
		return string(v) == "true", true, nil
	}
	n, ok, err := upsyncInt(key, v)
	if err != nil && k != "number" && k != "string" {
		return false, false, fmt.Errorf("%s is %s, want 0, 1, true or false", key, jsonobj.Article(k))
	}
	if err != nil || ok && n != 0 && n != 1 {
		return false, false, fmt.Errorf("%s %s: want 0, 1, true or false", key, jsonobj.Clip(string(v)))
	}
	return n == 1, ok, nil
}

// encodeParams is the value Upsync and Plain register an instance with:
// its weight (meta "weight", default 1) and down 0, as nginx-upsync-module
// writes a server.
func encodeParams(r Registration) ([]byte, error) {
	weight := 1
	if w, ok := r.Meta["weight"]; ok {
		n, err := strconv.Atoi(w)
		if err != nil {
			return nil, fmt.Errorf("meta weight %q: %w", w, err)
		}
		weight = n
	}
	return fmt.Appendf(nil, `{"weight":%d,"down":0}`, weight), nil
}
