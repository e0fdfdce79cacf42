package loopback

import "flag"

// Programs say where the programs of a loopback stack are.
type Programs struct {
	Consul, Nginx, Daemon string // binaries
	RepoRoot              string // for nginx/lua
}

// Flags registers -consul, -nginx, -swallowkeeper and -repo on fs.
func (p *Programs) Flags(fs *flag.FlagSet) {
	fs.StringVar(&p.Consul, "consul", "consul", "consul binary")
	fs.StringVar(&p.Nginx, "nginx", "/usr/sbin/nginx", "nginx binary (Debian's, with libnginx-mod-http-lua)")
	fs.StringVar(&p.Daemon, "swallowkeeper", "swallowkeeper", "swallowkeeper binary")
	fs.StringVar(&p.RepoRoot, "repo", ".", "repository root (for nginx/lua)")
}
