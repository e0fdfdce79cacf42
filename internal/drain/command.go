package drain

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Command runs `swallowkeeper drain` (undrain false) or `swallowkeeper
// undrain` and returns the exit code. defaultConfig is read when -config
// is not given and it exists.
func Command(undrain bool, args []string, stdout, stderr io.Writer, defaultConfig string) int {
	name := "drain"
	if undrain {
		name = "undrain"
	}
	fs := flag.NewFlagSet("swallowkeeper "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file (default "+defaultConfig+" if it exists)")
	file := fs.String("file", "", "persisted upstream file (default: the configuration's file); the marks are kept next to it")
	list := fs.Bool("list", false, "list the marks and exit")
	force := false
	if !undrain {
		fs.BoolVar(&force, "force", false, "mark a server the persisted file does not have (it applies when the server appears)")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swallowkeeper %s [flags] UPSTREAM IP:PORT\n       swallowkeeper %s -list\n\n", name, name)
		if undrain {
			fmt.Fprint(stderr, "Puts a server drained by hand back in service: the running daemon\napplies the registry's state for it within a second.\n\n")
		} else {
			fmt.Fprint(stderr, "Marks a server `down` in the persisted file and in nginx until it is\nundrained, without touching the registry. The mark is kept in a file next\nto the persisted upstream file and survives daemon and nginx restarts; the\nrunning daemon applies it within a second. Draining the last usable primary\nserver of an upstream is refused.\n\n")
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	upstreamFile, err := persistedFile(*path, *file, defaultConfig)
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", name, err)
		return 1
	}
	marks := &File{Path: PathFor(upstreamFile)}
	if *list {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "swallowkeeper %s: -list takes no arguments\n", name)
			return 2
		}
		if err := printMarks(stdout, marks); err != nil {
			fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", name, err)
			return 1
		}
		return 0
	}
	if fs.NArg() != 2 {
		fmt.Fprintf(stderr, "swallowkeeper %s: want UPSTREAM IP:PORT, got %d argument(s)\n\n", name, fs.NArg())
		fs.Usage()
		return 2
	}
	ups, addr, err := parseArgs(fs.Arg(0), fs.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", name, err)
		return 2
	}
	var msg string
	if undrain {
		msg, err = Undrain(marks, ups, addr)
	} else {
		msg, err = Drain(marks, store.OpenToRead(upstreamFile), ups, addr, force, time.Now())
	}
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", name, err)
		return 1
	}
	fmt.Fprintln(stdout, msg)
	return 0
}

// persistedFile finds the persisted upstream file: -file, else the
// configuration's (-config, else defaultConfig when it exists, else the
// default).
func persistedFile(path, file, defaultConfig string) (string, error) {
	if file != "" {
		return file, nil
	}
	if path == "" {
		if _, err := os.Stat(defaultConfig); err == nil {
			path = defaultConfig
		}
	}
	if path == "" {
		return config.Default().File, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return "", err
	}
	return cfg.File, nil
}

func parseArgs(name, address string) (string, netip.AddrPort, error) {
	if err := upstream.ValidName(name); err != nil {
		return "", netip.AddrPort{}, err
	}
	addr, err := ParseAddress(address)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	return name, addr, nil
}

// find returns the index of the mark of (name, addr) in marks, or -1;
// names match case-insensitively, as dyups matches them.
func find(marks []engine.Drain, name string, addr netip.AddrPort) int {
	return slices.IndexFunc(marks, func(m engine.Drain) bool {
		return m.Addr == addr && upstream.FoldKey(m.Upstream) == upstream.FoldKey(name)
	})
}

// Drain adds the mark of (name, addr) to marks and returns what to tell
// the operator. It refuses a server the persisted state does not hold
// (unless force), and one that is the last usable primary server of its
// upstream, by the engine's own rule (engine.ApplyDrains) over the
// persisted state and the marks already there.
func Drain(marks *File, persisted engine.Store, name string, addr netip.AddrPort, force bool, now time.Time) (string, error) {
	have, unlock, err := marks.lockAndLoad()
	if err != nil {
		return "", err
	}
	defer unlock()
	if i := find(have, name, addr); i >= 0 {
		return fmt.Sprintf("%s %s is drained already (since %s)", have[i].Upstream, addr, have[i].Since.Local().Format(time.DateTime)), nil
	}
	st, err := persisted.Load()
	if err != nil {
		return "", err
	}
	mark := engine.Drain{Upstream: name, Addr: addr, Since: now}
	in := inState(st, name, addr)
	if !in && !force {
		return "", fmt.Errorf("upstream %s has no server %s in %s; check the name and address, or use -force to mark it for when it appears", name, addr, persistedPath(persisted))
	}
	// The new mark is the newest: ApplyDrains refuses it, not an older one.
	_, states, _ := engine.ApplyDrains(st, append(slices.Clone(have), mark))
	for _, s := range states {
		if in && s.Drain == mark && !s.Active {
			return "", fmt.Errorf("refusing to drain %s from upstream %s: it is its last usable primary server (nginx would fail every request); add or undrain another server first", addr, name)
		}
	}
	if err := marks.Save(append(have, mark)); err != nil {
		return "", err
	}
	if !inState(st, name, addr) {
		return fmt.Sprintf("marked %s %s as drained; it is not in the persisted file now, and is marked down when it appears", name, addr), nil
	}
	return fmt.Sprintf("drained %s %s: the running daemon marks it down in the file and in nginx within a second (swallowkeeper status shows it)", name, addr), nil
}

// Undrain removes the mark of (name, addr); a server that is not drained
// is an error.
func Undrain(marks *File, name string, addr netip.AddrPort) (string, error) {
	have, unlock, err := marks.lockAndLoad()
	if err != nil {
		return "", err
	}
	defer unlock()
	i := find(have, name, addr)
	if i < 0 {
		return "", fmt.Errorf("%s %s is not drained (swallowkeeper drain -list shows the marks)", name, addr)
	}
	if err := marks.Save(slices.Delete(have, i, i+1)); err != nil {
		return "", err
	}
	return fmt.Sprintf("undrained %s %s: the running daemon puts it back as the registry has it within a second", name, addr), nil
}

func inState(st upstream.State, name string, addr netip.AddrPort) bool {
	for n, u := range st {
		if upstream.FoldKey(n) == upstream.FoldKey(name) && u.ServerAt(addr) >= 0 {
			return true
		}
	}
	return false
}

func persistedPath(s engine.Store) string {
	if f, ok := s.(store.Persisted); ok {
		return f.Where()
	}
	return "the persisted file"
}

func printMarks(w io.Writer, f *File) error {
	marks, err := f.Load()
	if err != nil {
		return err
	}
	if len(marks) == 0 {
		fmt.Fprintf(w, "no server is drained (%s)\n", f.Path)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range marks {
		fmt.Fprintf(tw, "%s\t%s\tsince %s\n", m.Upstream, m.Addr, m.Since.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
