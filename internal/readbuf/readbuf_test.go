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
