package bench

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// procs reads the figures the bench takes from /proc (the machine, and the
// CPU time, memory, children and sockets of the processes it measures)
// through prometheus/procfs. Tests point it at a fake tree (newProcs(dir)).
type procs struct{ fs procfs.FS }

// newProcs reads the proc file system mounted at root ("/proc" for this
// machine's).
func newProcs(root string) (procs, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return procs{}, fmt.Errorf("proc file system at %s: %w", root, err)
	}
	return procs{fs: fs}, nil
}

// machine describes this machine: its cores, the first CPU's model name,
// total memory, kernel release and load average. What /proc does not give
// stays "unknown" (CPU model), 0 or empty.
func (pr procs) machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), CPUModel: "unknown", LoadAvgStart: pr.loadAvg()}
	if cpus, err := pr.fs.CPUInfo(); err == nil && len(cpus) > 0 && cpus[0].ModelName != "" {
		m.CPUModel = cpus[0].ModelName
	}
	if mem, err := pr.fs.Meminfo(); err == nil && mem.MemTotal != nil {
		m.MemoryMB = int(*mem.MemTotal / 1024) // MemTotal is in kB
	}
	if rel, err := pr.fs.SysctlStrings("kernel.osrelease"); err == nil {
		m.Kernel = strings.Join(rel, " ")
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages as /proc/loadavg prints
// them ("0.52 0.48 0.40"), or "" when unreadable.
func (pr procs) loadAvg() string {
	l, err := pr.fs.LoadAvg()
	if err != nil {
		return ""
	}
	return strings.Join([]string{fmtLoad(l.Load1), fmtLoad(l.Load5), fmtLoad(l.Load15)}, " ")
}

func fmtLoad(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// memory is what /proc/PID/status says of a process's resident set, in MB.
// A field the kernel does not give (RssAnon and RssFile before Linux 4.5)
// is 0.
type memory struct {
	RSS, HWM   float64 // VmRSS, and its peak VmHWM
	Anon, File float64 // RssAnon and RssFile: anonymous and file-backed parts of VmRSS
}

const mib = 1 << 20

// memory reads the resident set of process pid.
func (pr procs) memory(pid int) (memory, error) {
	s, err := procFile(pr, pid, "status", procfs.Proc.NewStatus)
	if err != nil {
		return memory{}, err
	}
	return memory{RSS: float64(s.VmRSS) / mib, HWM: float64(s.VmHWM) / mib,
		Anon: float64(s.RssAnon) / mib, File: float64(s.RssFile) / mib}, nil
}

// treePSS returns the proportional set size, in MB, of a process and its
// children (nginx: the master and its workers); shared memory, such as a
// shared dict, is split between them rather than counted in each.
func (pr procs) treePSS(pid int) (float64, error) {
	kids, err := pr.children(pid)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, pid := range append([]int{pid}, kids...) {
		r, err := procFile(pr, pid, "smaps_rollup", procfs.Proc.ProcSMapsRollup)
		if err != nil {
			return 0, err
		}
		total += float64(r.Pss) / mib
	}
	return total, nil
}

// children lists, in order, the processes whose parent is pid (nginx: its
// workers).
func (pr procs) children(pid int) ([]int, error) {
	all, err := pr.fs.AllProcs()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range all {
		// A process that ended since the listing has no stat: not a child.
		if s, err := p.Stat(); err == nil && s.PPID == pid {
			out = append(out, p.PID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// procFile reads one of process pid's files with read; name names the
// file in the error.
func procFile[T any](pr procs, pid int, name string, read func(procfs.Proc) (T, error)) (T, error) {
	var v T
	p, err := pr.fs.Proc(pid)
	if err != nil {
		return v, err
	}
	if v, err = read(p); err != nil {
		return v, fmt.Errorf("%s of %d: %w", name, pid, err)
	}
	return v, nil
}

// cpu returns the CPU time (user + system) process pid has used.
func (pr procs) cpu(pid int) (time.Duration, error) {
	s, err := procFile(pr, pid, "stat", procfs.Proc.Stat)
	if err != nil {
		return 0, err
	}
	// CPUTime is in seconds: whole clock ticks (10 ms) of utime + stime.
	return time.Duration(math.Round(s.CPUTime() * float64(time.Second))), nil
}

// tcpEstablished is the state ESTABLISHED in /proc/net/tcp.
const tcpEstablished = 1

// socketsTo counts the established TCP connections of process pid whose
// remote port is port: its open socket inodes matched against
// /proc/net/tcp and tcp6 (a table the kernel does not have is skipped).
func (pr procs) socketsTo(pid, port int) (int, error) {
	targets, err := procFile(pr, pid, "fd", procfs.Proc.FileDescriptorTargets)
	if err != nil {
		return 0, err
	}
	inodes := map[uint64]bool{}
	for _, t := range targets {
		if s, ok := strings.CutPrefix(t, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[ino] = true
			}
		}
	}
	n := 0
	for _, table := range []func() (procfs.NetTCP, error){pr.fs.NetTCP, pr.fs.NetTCP6} {
		lines, err := table()
		if err != nil {
			continue
		}
		for _, l := range lines {
			if l.St == tcpEstablished && l.RemPort == uint64(port) && inodes[l.Inode] {
				n++
			}
		}
	}
	return n, nil
}

// dyupsPushes sums swallowkeeper_dyups_requests_total for POST and DELETE
// (every outcome) from a Prometheus text exposition.
func dyupsPushes(metrics string) int {
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "swallowkeeper_dyups_requests_total{") {
			continue
		}
		if !strings.Contains(line, `op="POST"`) && !strings.Contains(line, `op="DELETE"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			n += int(v)
		}
	}
	return n
}

// metricSum sums every series of the metric name in a Prometheus text
// exposition.
func metricSum(metrics, name string) float64 {
	var n float64
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			n += v
		}
	}
	return n
}

func scrape(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// version runs a command and returns the first line of its output.
func version(bin string, args ...string) string {
	if bin == "" {
		return "not used"
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil && line == "" {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(line)
}
