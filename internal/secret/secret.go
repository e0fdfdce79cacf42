// Package secret is a value that never prints, for the credentials the
// configuration reads (Consul token, etcd password, target secrets) and
// the components it hands them to, without those importing config.
package secret

import (
	"errors"
	"fmt"
	"log/slog"

	"go.yaml.in/yaml/v3"
)

// Secret is a value that never prints: not in logs, not in %v, not in
// YAML or JSON. Reveal returns it.
type Secret string

const redacted = "<redacted>"

func (s Secret) String() string                { return redacted }
func (s Secret) GoString() string              { return redacted }
func (s Secret) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (s Secret) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (s Secret) Reveal() string                { return string(s) }
func (s Secret) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }
func (s Secret) MarshalYAML() (any, error)     { return redacted, nil }

// UnmarshalYAML refuses a secret in a YAML file.
func (s *Secret) UnmarshalYAML(*yaml.Node) error {
	return errors.New("a token is never read from the config file; use CONSUL_HTTP_TOKEN or consul.token_file")
}
