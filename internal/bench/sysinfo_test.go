package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 150, stime 50 ticks.
	line := "4242 (sk (a) b) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 8 0 100 1000000 2000 18446744073709551615"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*time.Second {
		t.Errorf("cpu = %v, want 2s (200 ticks of 10 ms)", got)
	}
	if _, err := parseStatCPU([]byte("no parens")); err == nil {
		t.Error("want an error")
	}
}

func TestCountTCP(t *testing.T) {
	// remote port 8500 = 0x2134; state 01 = ESTABLISHED, 06 = TIME_WAIT.
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A000 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0 20 4 30 10 -1
   1: 0100007F:A001 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:A002 0100007F:2134 06 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 0100007F:A003 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0 20 4 30 10 -1
   4: 0100007F:A004 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0 20 4 30 10 -1
`
	inodes := map[string]bool{"111": true, "222": true, "333": true, "444": true}
	if got := countTCP(strings.NewReader(table), inodes, 8500); got != 2 {
		t.Errorf("countTCP = %d, want 2 (established, to 8500, and ours)", got)
	}
}

func TestSocketsToOfThisProcess(t *testing.T) {
	n, err := socketsTo(os.Getpid(), 1)
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

func TestParentOfAndField(t *testing.T) {
	if got := parentOf([]byte("4242 (nginx: worker (x)) S 4240 4240 4240 0 -1")); got != 4240 {
		t.Errorf("parentOf = %d, want 4240", got)
	}
	if got := parentOf([]byte("garbage")); got != -1 {
		t.Errorf("parentOf(garbage) = %d, want -1", got)
	}
	rollup := "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:               10240 kB\nPss:                5120 kB\nPss_Anon:           1024 kB\n"
	if v, ok := field(rollup, "Pss:"); !ok || v != 5120 {
		t.Errorf("field Pss = %v, %v", v, ok)
	}
	if _, ok := field(rollup, "Swap:"); ok {
		t.Error("a missing field was found")
	}
}

// procStatusMB reads this process's own status: its resident set is split
// into anonymous and file-backed memory, which add up to about the whole.
func TestProcStatusMBReadsOwnStatus(t *testing.T) {
	m, err := procStatusMB(os.Getpid(), "VmRSS", "RssAnon", "RssFile", "NoSuchField")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["NoSuchField"]; ok {
		t.Errorf("a field the kernel does not give: %v", m)
	}
	if m["VmRSS"] <= 0 || m["RssAnon"] <= 0 || m["RssFile"] <= 0 {
		t.Fatalf("status fields %v, want VmRSS, RssAnon and RssFile above 0", m)
	}
	if sum := m["RssAnon"] + m["RssFile"]; sum > m["VmRSS"]*1.1 || sum < m["VmRSS"]*0.9 {
		t.Errorf("RssAnon + RssFile = %.1f MB, VmRSS %.1f MB", sum, m["VmRSS"])
	}
}
