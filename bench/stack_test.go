package bench

import (
	"strings"
	"testing"
)

// Every mode's nginx.conf gets the shared pieces whole, and only the run's
// own placeholders stay for startNginx to fill.
func TestNginxConfTextHasTheSharedPiecesInEveryMode(t *testing.T) {
	for _, mode := range []string{ModeLua, ModeReload, ModeConsulTemplate} {
		text := nginxConfText(mode)
		for _, piece := range []string{topCommon, proxyCommon} {
			if strings.Count(text, piece) != 1 {
				t.Errorf("%s: shared piece %.40q… appears %d times, want 1", mode, piece, strings.Count(text, piece))
			}
		}
		if strings.Contains(text, "{{top}}") || strings.Contains(text, "{{proxycommon}}") {
			t.Errorf("%s: a shared piece's placeholder is left:\n%s", mode, text)
		}
		if !strings.Contains(text, "\n{{user}}pid {{dir}}/nginx.pid;\n") {
			t.Errorf("%s: the run's placeholders must stay for startNginx:\n%s", mode, text)
		}
	}
	if !strings.HasPrefix(nginxConfText(ModeLua), "# Written by swallowkeeper-bench (mode ours-lua).\n{{modules}}\nworker_processes 2;\n") {
		t.Errorf("lua: the modules must load before the main block:\n%s", nginxConfText(ModeLua))
	}
}
