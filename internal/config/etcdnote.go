package config

import (
	"fmt"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
)

// EtcdWrapperNote says what `swallowkeeper register -registry etcd` must be
// told to write where and how this configuration reads: "" when the
// wrapper's defaults (-etcd-layout upsync, the layout's default prefix,
// the same as the daemon's) already match, or when the source is not etcd.
// `check` prints it, since it cannot see the wrappers' flags.
func (cfg *Config) EtcdWrapperNote() string {
	if cfg.Source != SourceEtcd {
		return ""
	}
	opt, err := cfg.EtcdOptions()
	if err != nil {
		return ""
	}
	var flags []string
	if string(opt.Layout) != Default().Etcd.Layout {
		flags = append(flags, "-etcd-layout "+string(opt.Layout))
	}
	if p := layout.CleanRoot(opt.Prefix); p != layout.CleanRoot(opt.Layout.DefaultRoot()) {
		flags = append(flags, "-etcd-prefix "+p)
	}
	if len(flags) == 0 {
		return ""
	}
	return fmt.Sprintf("note: etcd.layout %s under %s is not what `swallowkeeper register -registry etcd` writes by default (upsync under /upstreams); run it with %s",
		opt.Layout, layout.CleanRoot(opt.Prefix), strings.Join(flags, " "))
}
