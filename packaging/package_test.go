// Package packaging holds the tests of what the project ships: the .deb and
// .rpm that scripts/package.sh builds, and the Dockerfile.
package packaging

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// testVersion is what the test asks package.sh to build: a tag with
// commits after it, the case whose package version needs a rewrite.
const (
	testVersion    = "v9.8.7-3-g1a2b3c4"
	testPkgVersion = "9.8.7+3.g1a2b3c4" // after 9.8.7 for dpkg and rpm alike
)

// debArch is the Debian name of a GOARCH, for the ones that differ.
var debArch = map[string]string{"386": "i386", "arm": "armhf", "ppc64le": "ppc64el", "mips64le": "mips64el"}

// buildPackages runs scripts/package.sh into a temporary directory and
// returns the .deb and the .rpm it made.
func buildPackages(t *testing.T) (deb, rpm string) {
	t.Helper()
	out := t.TempDir()
	// A cold run downloads and builds nfpm; under load that takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/package.sh", "-o", out, "-version", testVersion)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/package.sh: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr.String())
	}
	t.Logf("scripts/package.sh took %s", time.Since(start).Round(time.Millisecond))
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(out, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		entries, _ := os.ReadDir(out)
		t.Fatalf("want one .deb and one .rpm in %s, got %v %v (dir: %v)\nstdout:\n%s", out, debs, rpms, entries, stdout)
	}
	for _, p := range []string{debs[0], rpms[0]} {
		if !strings.Contains(string(stdout), p) {
			t.Errorf("package.sh did not print %s; stdout:\n%s", p, stdout)
		}
	}
	return debs[0], rpms[0]
}

// run runs a command and returns its standard output, failing the test
// when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// controlFields parses a deb822 paragraph (the control file).
func controlFields(text string) map[string]string {
	fields := map[string]string{}
	last := ""
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = strings.TrimSpace(k)
		fields[last] = strings.TrimSpace(v)
	}
	return fields
}

// unitSetting is one Key=Value line of a systemd unit.
type unitSetting struct{ key, value string }

// unitSettings returns the directives of a unit file, comments left out.
func unitSettings(text string) []unitSetting {
	var out []unitSetting
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out = append(out, unitSetting{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// unitPaths returns every absolute path a unit's directives name: each
// word of a value that starts with '/', after the prefixes systemd allows
// on Exec*= and EnvironmentFile= ("-", "@", ":", "+", "!").
func unitPaths(settings []unitSetting) []unitSetting {
	var out []unitSetting
	for _, s := range settings {
		if strings.Contains(s.value, "://") { // Documentation= URLs
			continue
		}
		for _, w := range strings.Fields(s.value) {
			w = strings.TrimLeft(w, "-@:+!")
			if strings.HasPrefix(w, "/") {
				out = append(out, unitSetting{s.key, w})
			}
		}
	}
	return out
}

func unitValue(settings []unitSetting, key string) string {
	for _, s := range settings {
		if s.key == key {
			return s.value
		}
	}
	return ""
}

// TestPackages builds the packages with scripts/package.sh, unpacks the
// .deb with dpkg-deb and reads the .rpm's header, and checks that both hold
// the binary, the systemd unit, the example configuration (as a
// configuration file) and the Lua module, and that every path the unit
// names is in the package or made by systemd.
func TestPackages(t *testing.T) {
	dpkgDeb := testenv.Binary(t, "", "dpkg-deb", "Debian's dpkg package")
	debPath, rpmPath := buildPackages(t)

	// Control fields, as dpkg-deb -I shows them.
	control := controlFields(run(t, dpkgDeb, "-I", debPath, "control"))
	arch := runtime.GOARCH
	if a, ok := debArch[arch]; ok {
		arch = a
	}
	for k, want := range map[string]string{"Package": "swallowkeeper", "Version": testPkgVersion, "Architecture": arch} {
		if got := control[k]; got != want {
			t.Errorf("control %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"Maintainer", "Description", "Homepage", "Section"} {
		if control[k] == "" {
			t.Errorf("control has no %s field: %v", k, control)
		}
	}
	conffiles := strings.Fields(run(t, dpkgDeb, "-I", debPath, "conffiles"))

	tree := t.TempDir()
	run(t, dpkgDeb, "-x", debPath, tree)
	inTree := func(p string) (os.FileInfo, bool) {
		fi, err := os.Lstat(filepath.Join(tree, p))
		return fi, err == nil
	}

	// The binary: executable, built with the version asked for.
	fi, ok := inTree("/usr/bin/swallowkeeper")
	if !ok || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("/usr/bin/swallowkeeper missing or not an executable file: %v", fi)
	}
	if out := run(t, filepath.Join(tree, "usr/bin/swallowkeeper"), "version"); !strings.HasPrefix(out, "swallowkeeper "+testVersion+" ") {
		t.Errorf("packaged binary: version says %q, want swallowkeeper %s", out, testVersion)
	}

	// The example configuration, unchanged, as a configuration file.
	const confPath = "/etc/swallowkeeper/swallowkeeper.yml"
	sameFile(t, filepath.Join(tree, confPath), "../examples/swallowkeeper.yml")
	if !slices.Contains(conffiles, confPath) {
		t.Errorf("%s is not a conffile (an upgrade would overwrite the operator's edits); conffiles: %v", confPath, conffiles)
	}

	// The Lua module: every file of nginx/lua/swallowkeeper, where the
	// sample configurations' lua_package_path finds it.
	luaFiles, _ := filepath.Glob("../nginx/lua/swallowkeeper/*.lua")
	if len(luaFiles) == 0 {
		t.Fatal("no nginx/lua/swallowkeeper/*.lua in the repository")
	}
	for _, f := range luaFiles {
		sameFile(t, filepath.Join(tree, "/usr/share/swallowkeeper/lua/swallowkeeper", filepath.Base(f)), f)
	}
	luaConf, err := os.ReadFile("../nginx/conf/lua.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`lua_package_path\s+"([^";]+)`).FindSubmatch(luaConf)
	if m == nil {
		t.Fatal("nginx/conf/lua.conf has no lua_package_path")
	}
	for _, mod := range regexp.MustCompile(`require\("([a-z_.]+)"\)`).FindAllSubmatch(luaConf, -1) {
		p := strings.Replace(string(m[1]), "?", strings.ReplaceAll(string(mod[1]), ".", "/"), 1)
		if _, ok := inTree(p); !ok {
			t.Errorf("nginx/conf/lua.conf requires %s, which lua_package_path finds at %s: not in the package", mod[1], p)
		}
	}

	// The unit, and every path it names.
	const unitPath = "/usr/lib/systemd/system/swallowkeeper.service"
	unitText, err := os.ReadFile(filepath.Join(tree, unitPath))
	if err != nil {
		t.Fatalf("the package has no systemd unit: %v", err)
	}
	settings := unitSettings(string(unitText))
	stateDir := unitValue(settings, "StateDirectory")
	// Outside the package, each for a reason that the test checks where it
	// can: systemd creates /var/lib/<StateDirectory> owned by User= before
	// it starts the service; /bin/kill is the base system's (procps on
	// Debian, util-linux on RPM distributions).
	outside := map[string]string{"/bin/kill": "base system"}
	if stateDir != "" {
		outside["/var/lib/"+stateDir] = "StateDirectory=" + stateDir
	}
	paths := unitPaths(settings)
	if len(paths) == 0 {
		t.Fatalf("found no paths in the unit:\n%s", unitText)
	}
	for _, p := range paths {
		if why, ok := outside[p.value]; ok {
			t.Logf("unit %s=%s: not in the package (%s)", p.key, p.value, why)
			continue
		}
		if _, ok := inTree(p.value); !ok {
			t.Errorf("unit %s= names %s, which the package does not hold", p.key, p.value)
		}
	}
	for _, key := range []string{"ExecStart", "ExecStartPre"} {
		argv := strings.Fields(unitValue(settings, key))
		if len(argv) == 0 || argv[0] != "/usr/bin/swallowkeeper" {
			t.Errorf("unit %s=%v, want /usr/bin/swallowkeeper first", key, argv)
		}
		if i := slices.Index(argv, "-config"); i < 0 || i+1 >= len(argv) || argv[i+1] != confPath {
			t.Errorf("unit %s=%v does not read %s", key, argv, confPath)
		}
	}

	// The user the unit runs as is created before the files are unpacked.
	user := unitValue(settings, "User")
	if user == "" {
		t.Fatalf("unit has no User=")
	}
	scripts := t.TempDir()
	run(t, dpkgDeb, "-e", debPath, scripts)
	preinst, err := os.ReadFile(filepath.Join(scripts, "preinst"))
	if err != nil {
		t.Fatalf("the .deb has no preinst to create user %s: %v", user, err)
	}
	if !regexp.MustCompile(`useradd --system\b[^\n]*(\\\n[^\n]*)*\b` + user + `\n`).Match(preinst) {
		t.Errorf("preinst does not create system user %s:\n%s", user, preinst)
	}
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
		p := filepath.Join(scripts, s)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable: %v", s, err)
			continue
		}
		run(t, "sh", "-n", p)
	}

	// The .rpm: the same files, the configuration marked as such.
	debFiles := map[string]bool{}
	filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			debFiles[strings.TrimPrefix(p, tree)] = true
		}
		return nil
	})
	checkRPM(t, rpmPath, debFiles, confPath, user)
}

// TestPackageVersions checks how package.sh turns a git describe into a
// package version that dpkg and rpm order as git does: a tag's release
// after its release candidates, commits after the tag before them.
func TestPackageVersions(t *testing.T) {
	for version, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"1.2.3":                   "1.2.3",
		"v1.2.3-rc1":              "1.2.3-rc1",
		"v1.2.3-dirty":            "1.2.3+dirty",
		"v1.2.3-rc1-dirty":        "1.2.3-rc1+dirty",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-rc1-4-gabc1234":   "1.2.3-rc1+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234.dirty",
		"abc1234":                 "0.0.0+gabc1234",
		"abc1234-dirty":           "0.0.0+gabc1234.dirty",
		"dev":                     "0.0.0+dev",
	} {
		cmd := exec.Command("bash", "scripts/package.sh", "-print-version", "-version", version)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("package.sh -version %s: %v\n%s", version, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); got != version+" "+want {
			t.Errorf("package.sh -version %s: printed %q, want %q", version, got, version+" "+want)
		}
	}
	cmd := exec.Command("bash", "scripts/package.sh", "-print-version", "-version", "1.2.3 ; rm")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("package.sh took a version with a space and a semicolon: %s", out)
	}
}

// TestPreinstallCreatesTheUserOnce runs packaging/scripts/preinstall.sh
// with getent, groupadd and useradd replaced by stubs that log their
// arguments: on a machine without the user it creates the group and a
// system user without a login shell; where they exist it changes nothing.
func TestPreinstallCreatesTheUserOnce(t *testing.T) {
	script, err := filepath.Abs("scripts/preinstall.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, exists := range []bool{false, true} {
		bin := t.TempDir()
		calls := filepath.Join(bin, "calls")
		getent := "exit 2" // getent's "not found"
		if exists {
			getent = "echo \"$2:x:999:999::/var/lib/swallowkeeper:/usr/sbin/nologin\""
		}
		for name, body := range map[string]string{"getent": getent, "groupadd": "", "useradd": ""} {
			stub := "#!/bin/sh\necho \"" + name + " $*\" >>" + calls + "\n" + body + "\n"
			if err := os.WriteFile(filepath.Join(bin, name), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"install"}, {"1"}} { // deb, rpm
			os.Remove(calls)
			cmd := exec.Command("sh", append([]string{script}, args...)...)
			cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("preinstall %v (user exists: %v): %v\n%s", args, exists, err, out)
			}
			log, _ := os.ReadFile(calls)
			var made []string
			for line := range strings.Lines(string(log)) {
				if !strings.HasPrefix(line, "getent ") {
					made = append(made, strings.TrimSpace(line))
				}
			}
			want := []string{
				"groupadd --system swallowkeeper",
				"useradd --system --gid swallowkeeper --no-create-home --home-dir /var/lib/swallowkeeper --shell /usr/sbin/nologin --comment SwallowKeeper daemon swallowkeeper",
			}
			if exists {
				want = nil
			}
			if !slices.Equal(made, want) {
				t.Errorf("preinstall %v (user exists: %v) ran %q, want %q", args, exists, made, want)
			}
		}
	}
}

// sameFile fails the test unless got holds the bytes of the repository's
// file want.
func sameFile(t *testing.T, got, want string) {
	t.Helper()
	g, err := os.ReadFile(got)
	if err != nil {
		t.Errorf("not in the package: %v", err)
		return
	}
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s differs from the repository's %s", got, want)
	}
}
