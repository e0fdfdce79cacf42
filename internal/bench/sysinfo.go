package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuModel reads the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotalMB() int {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.Atoi(f[1])
				return kb / 1024
			}
		}
	}
	return 0
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// procRSS returns VmRSS and VmHWM of a process in MB.
func procRSS(pid int) (rss, hwm float64, err error) {
	m, err := procStatusMB(pid, "VmRSS", "VmHWM")
	return m["VmRSS"], m["VmHWM"], err
}

// procStatusMB returns the named kB fields of /proc/PID/status in MB; a
// field the kernel does not give is absent.
func procStatusMB(pid int, names ...string) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, name := range names {
		if kb, ok := field(string(b), name+":"); ok {
			out[name] = kb / 1024
		}
	}
	return out, nil
}

// treePSS returns the proportional set size, in MB, of a process and its
// children (nginx: the master and its workers); shared memory, such as a
// shared dict, is split between them rather than counted in each.
func treePSS(pid int) (float64, error) {
	kids, err := children(pid)
	if err != nil {
		return 0, err
	}
	total := 0.0
	pids := append([]int{pid}, kids...)
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			return 0, err
		}
		kb, ok := field(string(b), "Pss:")
		if !ok {
			return 0, fmt.Errorf("/proc/%d/smaps_rollup: no Pss", p)
		}
		total += kb / 1024
	}
	return total, nil
}

// children lists the processes whose parent is pid (nginx: its workers).
func children(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil && parentOf(b) == pid {
			out = append(out, child)
		}
	}
	return out, nil
}

// parentOf reads the parent pid (field 4) of a /proc/PID/stat line.
func parentOf(b []byte) int {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}

// field returns the number after name in a "Name:   123 kB" listing.
func field(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// procCPU returns utime+stime of a process.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime (field 14) and stime (field 15) of a
// /proc/PID/stat line; the command name in parentheses may hold spaces.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// socketsTo counts the established TCP connections of process pid whose
// remote port is port: its open socket inodes matched against
// /proc/net/tcp and tcp6.
func socketsTo(pid, port int) (int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		n += countTCP(f, inodes, port)
		f.Close()
	}
	return n, nil
}

// countTCP counts the lines of a /proc/net/tcp table in state
// ESTABLISHED, with remote port port and an inode in inodes.
func countTCP(r io.Reader, inodes map[string]bool, port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		if f[3] == "01" && strings.HasSuffix(f[2], want) && inodes[f[9]] {
			n++
		}
	}
	return n
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
