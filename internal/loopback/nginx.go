package loopback

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// LuaModules returns the load_module lines (NDK first, then Lua) that the
// nginx binary bin needs for the Lua module, or none when Lua is compiled
// in (OpenResty). Debian ships them as dynamic modules that its
// /etc/nginx/nginx.conf loads through /etc/nginx/modules-enabled; a
// configuration of our own must load them.
func LuaModules(bin string) (string, error) {
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -V: %v\n%s", bin, err, out)
	}
	v := string(out)
	if strings.Contains(v, "lua-nginx-module") || strings.Contains(v, "ngx_lua") {
		return "", nil
	}
	dir := "/usr/lib/nginx/modules"
	if i := strings.Index(v, "--modules-path="); i >= 0 {
		dir = strings.Fields(v[i+len("--modules-path="):])[0]
	}
	var lines string
	for _, name := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s has no Lua module (%v); Debian: apt-get install libnginx-mod-http-lua", bin, err)
		}
		lines += "load_module " + p + ";\n"
	}
	return lines, nil
}

// NginxBound reports whether the nginx whose master is pid has bound its
// listening ports: nginx writes its pid file only after binding them. A
// port found free can be taken by another program before nginx binds it,
// and that program may accept connections too, so a connection alone does
// not show that this nginx serves.
func NginxBound(pidFile string, pid int) bool {
	b, err := os.ReadFile(pidFile)
	return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid)
}
