// Package readbuf reads whole answers into reused buffers.
package readbuf

import (
	"io"
	"slices"
)

// Into appends all of r to buf, growing it by half when full. A buffer
// that the answer fills exactly is not grown: Into reads a little into a
// probe first to see whether the answer ended, where bytes.Buffer.ReadFrom
// would double it to make room for a read that finds the end (a 17 MB
// answer then held a 34 MB buffer for the life of the daemon).
func Into(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			// Full: the answer may also be complete, as when a reused
			// buffer is exactly its size; look before growing (and
			// copying) megabytes.
			var probe [512]byte
			n, err := r.Read(probe[:])
			if n == 0 && err == io.EOF {
				return buf, nil
			}
			buf = append(slices.Grow(buf, max(cap(buf)/2, 64<<10)), probe[:n]...)
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return buf, err
			}
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Sized is Into for an answer that says its length (n, -1 when it does
// not): a buffer too small for it is replaced by one of that size at once,
// rather than grown through copies, unless n is above limit, which a
// header alone must not make the caller allocate.
func Sized(r io.Reader, n, limit int64, buf []byte) ([]byte, error) {
	if n > int64(cap(buf)) && n <= limit {
		buf = make([]byte, 0, n)
	}
	return Into(r, buf[:0])
}
