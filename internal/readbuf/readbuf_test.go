package readbuf

import (
	"strings"
	"testing"
	"testing/iotest"
)

// Into reads answers of every size into reused buffers, including
// one that fills its buffer exactly, without growing it then.
func TestInto(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 64 << 10, 100000} {
		want := strings.Repeat("x", size)
		for _, capacity := range []int{0, size, size + 1, size / 2} {
			buf := make([]byte, 0, capacity)
			got, err := Into(iotest.OneByteReader(strings.NewReader(want)), buf)
			if err != nil || string(got) != want {
				t.Fatalf("size %d cap %d: %d bytes, %v", size, capacity, len(got), err)
			}
			if capacity == size && size > 0 && cap(got) != capacity {
				t.Errorf("size %d: an exactly fitting buffer grew to %d", size, cap(got))
			}
		}
	}
}

// Sized takes a buffer of the announced size at once, unless the size is
// above the limit or the buffer already has room; the answer reads the
// same either way.
func TestSized(t *testing.T) {
	want := strings.Repeat("z", 10000)
	cases := []struct {
		name      string
		n, limit  int64
		capacity  int
		wantExact bool // the result's capacity is exactly n
	}{
		{"announced, small buffer", 10000, 1 << 20, 16, true},
		{"announced above the limit", 10000, 100, 16, false},
		{"not announced", -1, 1 << 20, 16, false},
		{"room already", 10000, 1 << 20, 20000, false},
	}
	for _, tc := range cases {
		got, err := Sized(strings.NewReader(want), tc.n, tc.limit, make([]byte, 0, tc.capacity))
		if err != nil || string(got) != want {
			t.Fatalf("%s: %d bytes, %v", tc.name, len(got), err)
		}
		if exact := cap(got) == int(tc.n); exact != tc.wantExact {
			t.Errorf("%s: capacity %d, want exactly %d: %v", tc.name, cap(got), tc.n, tc.wantExact)
		}
		if tc.name == "room already" && cap(got) != tc.capacity {
			t.Errorf("%s: a buffer with room was replaced (capacity %d)", tc.name, cap(got))
		}
	}
}
