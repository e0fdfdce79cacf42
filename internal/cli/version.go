package cli

import "runtime/debug"

// buildVersion is Version when the build set it (-ldflags), else what Go's
// build info knows: the module version (go install …@v1.2.3) or the VCS
// revision the binary was built from, marked +dirty for uncommitted
// changes. revision is the VCS revision, when known.
func buildVersion() (version, revision string) {
	version = Version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if version != "dev" {
		return version, revision
	}
	switch {
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		version = bi.Main.Version
	case revision != "":
		version = "dev-" + revision[:min(12, len(revision))]
		if dirty {
			version += "+dirty"
		}
	}
	return version, revision
}
