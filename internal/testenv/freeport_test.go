package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Two test binaries running at once (go test runs packages in parallel)
// get disjoint ports from FreePort, and none of them lies in the range the
// kernel hands out for port 0 and outgoing connections.
func TestFreePortIsUniqueAcrossProcesses(t *testing.T) {
	const n = 200
	if os.Getenv("SK_FREEPORT_CHILD") == "1" {
		var ports []string
		for range n {
			ports = append(ports, strconv.Itoa(FreePort(t)))
		}
		os.Stdout.WriteString("PORTS " + strings.Join(ports, " ") + "\n")
		return
	}

	mine := map[int]bool{}
	for range n {
		p := FreePort(t)
		if mine[p] {
			t.Fatalf("port %d given twice in one process", p)
		}
		mine[p] = true
	}
	// The child runs while this process holds its ports.
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreePortIsUniqueAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SK_FREEPORT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	line := ""
	for l := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "PORTS "); ok {
			line = rest
		}
	}
	theirs := strings.Fields(line)
	if len(theirs) != n {
		t.Fatalf("child printed %d ports, want %d:\n%s", len(theirs), n, out)
	}
	low := ephemeralLow(t)
	shared := 0
	for _, s := range theirs {
		p, _ := strconv.Atoi(s)
		if mine[p] {
			shared++
		}
		if p >= low {
			t.Errorf("child's port %d is in the ephemeral range (from %d)", p, low)
		}
	}
	for p := range mine {
		if p >= low {
			t.Errorf("port %d is in the ephemeral range (from %d)", p, low)
		}
	}
	if shared > 0 {
		t.Errorf("%d of the child's %d ports are also held here", shared, n)
	}
	t.Logf("%d ports here and %d in a second process, none shared, all below %d", n, n, low)
}

func ephemeralLow(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	low, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return low
}
