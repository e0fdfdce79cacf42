package loopback

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeNginx writes a script that answers -V like nginx built with args.
func fakeNginx(t *testing.T, args string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nginx")
	script := "#!/bin/sh\necho 'nginx version: nginx/1.26.3' >&2\necho 'configure arguments: " + args + "' >&2\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLuaModulesNamesTheDynamicModulesOrNoneWhenBuiltIn(t *testing.T) {
	if got, err := LuaModules(fakeNginx(t, "--prefix=/usr/local/openresty/nginx --add-module=../ngx_lua-0.10.26")); err != nil || got != "" {
		t.Errorf("Lua built in: %q, %v; want no lines", got, err)
	}

	dir := t.TempDir()
	for _, m := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
		if err := os.WriteFile(filepath.Join(dir, m), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := "load_module " + dir + "/ndk_http_module.so;\nload_module " + dir + "/ngx_http_lua_module.so;\n"
	if got, err := LuaModules(fakeNginx(t, "--with-http_ssl_module --modules-path="+dir+" --with-threads")); err != nil || got != want {
		t.Errorf("dynamic modules in %s: %q, %v; want %q", dir, got, err, want)
	}

	missing := filepath.Join(t.TempDir(), "none")
	if got, err := LuaModules(fakeNginx(t, "--modules-path="+missing)); err == nil || !strings.Contains(err.Error(), "libnginx-mod-http-lua") {
		t.Errorf("no module files: %q, %v; want an error that says what to install", got, err)
	}
	if _, err := LuaModules(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("a binary that does not run: no error")
	}
}

func TestNginxBoundWantsItsOwnPid(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "nginx.pid")
	if NginxBound(pidFile, 4242) {
		t.Fatal("no pid file yet: bound")
	}
	if err := os.WriteFile(pidFile, []byte("4141\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if NginxBound(pidFile, 4242) {
		t.Fatal("another nginx's pid file: bound")
	}
	if err := os.WriteFile(pidFile, []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !NginxBound(pidFile, 4242) {
		t.Fatal("its own pid, newline and all: not bound")
	}
}
