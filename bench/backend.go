package bench

import (
	"strconv"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// Backend is the loopback instance the scenarios register, stop and crash;
// the demo runs the same server.
type Backend = loopback.Backend

// backendPrefix starts every backend's answer: the instance id.
const backendPrefix = "inst-"

// NewBackend starts backend inst-n on a free port.
func NewBackend(n int) (*Backend, error) { return loopback.NewBackend(backendPrefix + strconv.Itoa(n)) }
