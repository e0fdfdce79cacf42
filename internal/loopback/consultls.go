package loopback

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ConsulTLS makes, with the consul binary, a CA and a server certificate
// for 127.0.0.1 in dir, and returns the agent configuration (one -hcl
// value each) that serves https on port with them, and the CA's file for
// clients. Over https the agent speaks HTTP/2, which consul.watch:
// per_service needs; the tests and the bench both start such an agent.
func ConsulTLS(consul, dir string, port int) (hcl []string, caFile string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	for _, args := range [][]string{{"tls", "ca", "create"}, {"tls", "cert", "create", "-server", "-dc", "dc1", "-additional-ipaddress", "127.0.0.1"}} {
		cmd := exec.Command(consul, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("consul %v: %w\n%s", args, err, out)
		}
	}
	caFile = filepath.Join(dir, "consul-agent-ca.pem")
	return []string{fmt.Sprintf("ports { https = %d }", port),
		fmt.Sprintf("tls { defaults { ca_file = %q cert_file = %q key_file = %q verify_incoming = false } }",
			caFile, filepath.Join(dir, "dc1-server-consul-0.pem"), filepath.Join(dir, "dc1-server-consul-0-key.pem"))}, caFile, nil
}
