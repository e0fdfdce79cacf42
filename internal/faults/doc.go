// Package faults is SwallowKeeper's fault-injection suite: it runs the real
// daemon binary (built once by TestMain) between real Consul and real nginx
// with the Lua dyups module, and breaks things on purpose while traffic
// flows: the registry dies for a minute, the Consul leader is killed in the
// middle of a stream of changes, the daemon is killed with SIGKILL while it
// writes the persisted file, nginx is stopped and its workers are killed
// under load.
//
// Each test asserts the guarantee docs/RELIABILITY.md states, and prints
// what it measured both with t.Logf and on stdout in lines starting with
// "FIGURE ", so that CI logs carry the numbers.
//
// Environment: SK_OUTAGE shortens the Consul outage (default 60s) and
// SK_KILLS sets the number of SIGKILL iterations (default 40 per layout) for local
// runs; CONSUL_BIN and SWALLOWKEEPER_NGINX pick the binaries as everywhere
// else in the tests. The package has no code of its own: everything is in
// its _test.go files.
package faults
