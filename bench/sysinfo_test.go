package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

// fakeProc writes files (path → content) into a fresh proc tree, and
// links (path → target) as symbolic links, as /proc/PID/fd holds them.
func fakeProc(t *testing.T, files, links map[string]string) procs {
	t.Helper()
	root := t.TempDir()
	for path, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, path), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for path, target := range links {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, path)); err != nil {
			t.Fatal(err)
		}
	}
	pr, err := newProcs(root)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// stat is a /proc/PID/stat line of a process named comm with parent ppid
// and utime, stime clock ticks (10 ms).
func stat(pid int, comm string, ppid, utime, stime int) string {
	return fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194560 1000 0 0 0 %d %d 0 0 20 0 8 0 100 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
		pid, comm, ppid, pid, pid, utime, stime)
}

func TestProcsCPUOfAFakeProcess(t *testing.T) {
	// A command name with spaces and parentheses; utime 150, stime 50 ticks.
	pr := fakeProc(t, map[string]string{"4242/stat": stat(4242, "sk (a) b", 1, 150, 50)}, nil)
	got, err := pr.cpu(4242)
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*time.Second {
		t.Errorf("cpu = %v, want 2s (200 ticks of 10 ms)", got)
	}
	if _, err := pr.cpu(4243); err == nil {
		t.Error("cpu of a process that is not there: want an error")
	}
}

func TestProcsSocketsToAFakeProcess(t *testing.T) {
	// remote port 8500 = 0x2134; state 01 = ESTABLISHED, 06 = TIME_WAIT.
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A000 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0 20 4 30 10 -1
   1: 0100007F:A001 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:A002 0100007F:2134 06 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 0100007F:A003 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0 20 4 30 10 -1
   4: 0100007F:A004 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0 20 4 30 10 -1
`
	table6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:A005 0000000000000000FFFF00000100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 666 1 0 20 4 30 10 -1
`
	// Sockets 111 to 444 and 666 are ours; 555 is another process's.
	links := map[string]string{"4242/fd/0": "/dev/null"}
	for i, ino := range []int{111, 222, 333, 444, 666} {
		links[fmt.Sprintf("4242/fd/%d", i+3)] = fmt.Sprintf("socket:[%d]", ino)
	}
	pr := fakeProc(t, map[string]string{"4242/stat": stat(4242, "sk", 1, 0, 0), "net/tcp": table, "net/tcp6": table6}, links)
	if got, err := pr.socketsTo(4242, 8500); err != nil || got != 3 {
		t.Errorf("socketsTo = %d, %v; want 3 (established, to 8500 and ours: 111, 222 over IPv4, 666 over IPv6)", got, err)
	}
}

func TestSocketsToOfThisProcess(t *testing.T) {
	pr, err := newProcs(procfs.DefaultMountPoint)
	if err != nil {
		t.Fatal(err)
	}
	n, err := pr.socketsTo(os.Getpid(), 1)
	if err != nil || n != 0 {
		t.Errorf("socketsTo(self, 1) = %d, %v", n, err)
	}
}

const sampleMetrics = `# HELP swallowkeeper_dyups_requests_total Requests to dyups interfaces.
# TYPE swallowkeeper_dyups_requests_total counter
swallowkeeper_dyups_requests_total{op="DELETE",outcome="ok",target="http://127.0.0.1:1"} 2
swallowkeeper_dyups_requests_total{op="GET",outcome="ok",target="http://127.0.0.1:1"} 90
swallowkeeper_dyups_requests_total{op="POST",outcome="ok",target="http://127.0.0.1:1"} 1005
swallowkeeper_dyups_requests_total{op="POST",outcome="retryable",target="http://127.0.0.1:1"} 3
swallowkeeper_consul_sweeps_total 4
swallowkeeper_consul_service_reads_total{kind="a"} 1.5e+03
swallowkeeper_consul_service_reads_total{kind="b"} 10
`

func TestDyupsPushesCountsPostsAndDeletes(t *testing.T) {
	if got := dyupsPushes(sampleMetrics); got != 1010 {
		t.Errorf("pushes = %d, want 1010 (POST and DELETE, every outcome, no GET)", got)
	}
}

func TestMetricSum(t *testing.T) {
	if got := metricSum(sampleMetrics, "swallowkeeper_consul_sweeps_total"); got != 4 {
		t.Errorf("sweeps = %v", got)
	}
	if got := metricSum(sampleMetrics, "swallowkeeper_consul_service_reads_total"); got != 1510 {
		t.Errorf("reads = %v", got)
	}
	if got := metricSum(sampleMetrics, "swallowkeeper_consul"); got != 0 {
		t.Errorf("a prefix is not a metric name: %v", got)
	}
}

// treePSS adds the PSS of a process and of its children, not of its
// grandchildren or of other processes.
func TestProcsTreePSSOfAFakeTree(t *testing.T) {
	rollup := func(pssKB int) string {
		return fmt.Sprintf("55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:               10240 kB\nPss:                %d kB\nPss_Anon:           1024 kB\n", pssKB)
	}
	pr := fakeProc(t, map[string]string{
		"4240/stat": stat(4240, "nginx: master process /usr/sbin/nginx", 1, 0, 0), "4240/smaps_rollup": rollup(2048),
		"4241/stat": stat(4241, "nginx: worker (x)", 4240, 0, 0), "4241/smaps_rollup": rollup(5120),
		"4242/stat": stat(4242, "nginx: worker process", 4240, 0, 0), "4242/smaps_rollup": rollup(3072),
		"4243/stat": stat(4243, "grandchild", 4242, 0, 0), "4243/smaps_rollup": rollup(100000),
		"4250/stat": stat(4250, "other", 1, 0, 0), "4250/smaps_rollup": rollup(100000),
		"self": "not a process",
	}, nil)
	kids, err := pr.children(4240)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kids, []int{4241, 4242}) {
		t.Errorf("children = %v, want [4241 4242]", kids)
	}
	if got, err := pr.treePSS(4240); err != nil || got != 10 {
		t.Errorf("treePSS = %v MB, %v; want 10 (2 + 5 + 3 MB)", got, err)
	}
}

// memory reads VmRSS, VmHWM, RssAnon and RssFile of /proc/PID/status in MB;
// a field the kernel does not give is 0.
func TestProcsMemoryOfAFakeProcess(t *testing.T) {
	status := "Name:\tswallowkeeper\nVmHWM:\t   61440 kB\nVmRSS:\t   51200 kB\nRssAnon:\t   34816 kB\nRssFile:\t   16384 kB\nRssShmem:\t       0 kB\n"
	old := "Name:\tswallowkeeper\nVmHWM:\t   61440 kB\nVmRSS:\t   51200 kB\n" // before Linux 4.5
	pr := fakeProc(t, map[string]string{"4242/status": status, "4243/status": old}, nil)
	got, err := pr.memory(4242)
	if want := (memory{RSS: 50, HWM: 60, Anon: 34, File: 16}); err != nil || got != want {
		t.Errorf("memory = %+v, %v; want %+v", got, err, want)
	}
	got, err = pr.memory(4243)
	if want := (memory{RSS: 50, HWM: 60}); err != nil || got != want {
		t.Errorf("memory without RssAnon/RssFile = %+v, %v; want %+v", got, err, want)
	}
}

func TestProcsMachineOfAFakeTree(t *testing.T) {
	pr := fakeProc(t, map[string]string{
		"cpuinfo":              "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n",
		"meminfo":              "MemTotal:        8141416 kB\nMemFree:         1000000 kB\n",
		"loadavg":              "0.52 1.40 0.05 2/345 6789\n",
		"sys/kernel/osrelease": "6.1.0-18-amd64\n",
	}, nil)
	m := pr.machine()
	want := Machine{Cores: runtime.NumCPU(), CPUModel: m.CPUModel, Kernel: "6.1.0-18-amd64", MemoryMB: 7950, LoadAvgStart: "0.52 1.40 0.05"}
	if m != want {
		t.Errorf("machine = %+v, want %+v", m, want)
	}
	// The cpuinfo format above is x86's; procfs parses each architecture's.
	if (runtime.GOARCH == "amd64" || runtime.GOARCH == "386") && m.CPUModel != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Errorf("CPU model = %q", m.CPUModel)
	}
	if got := fakeProc(t, nil, nil).machine(); got.CPUModel != "unknown" || got.MemoryMB != 0 || got.Kernel != "" || got.LoadAvgStart != "" {
		t.Errorf("machine of an empty tree = %+v, want an unknown CPU and nothing else", got)
	}
}

// memory reads this process's own status: its resident set is split into
// anonymous and file-backed memory, which add up to about the whole.
func TestProcsMemoryOfThisProcess(t *testing.T) {
	pr, err := newProcs(procfs.DefaultMountPoint)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pr.memory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS || m.Anon <= 0 || m.File <= 0 {
		t.Fatalf("memory %+v, want RSS, Anon and File above 0 and HWM at least RSS", m)
	}
	if sum := m.Anon + m.File; sum > m.RSS*1.1 || sum < m.RSS*0.9 {
		t.Errorf("RssAnon + RssFile = %.1f MB, VmRSS %.1f MB", sum, m.RSS)
	}
}
