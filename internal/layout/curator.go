package layout

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// decodeCurator reads Curator's ServiceInstance JSON:
//
//	{"name":"web","id":"…","address":"10.0.0.1","port":8080,"sslPort":null,
//	 "payload":{"@class":"…ZookeeperInstance","id":"…","name":"web",
//	            "metadata":{"instance_status":"UP"}},
//	 "registrationTimeUTC":1658569595889,"serviceType":"DYNAMIC","uriSpec":{…}}
//
// The service is the directory and the instance id the znode's name (as in
// Curator, which finds instances by path, not by the JSON's name and id).
// The upstream gets address:port. An instance with only an sslPort is
// dropped: an nginx upstream here carries plain ports, and sending plain
// traffic to a TLS port would fail every request. The string values of
// payload.metadata (Spring Cloud Zookeeper's metadata map) become Meta, and
// tags "key=value" so that RequireTags and the canary rule (metadata
// gray=canary) work; other values are ignored. The instance is unhealthy
// when metadata.instance_status is set and is not "UP" (Spring Cloud's
// OUT_OF_SERVICE) or when Curator's "enabled" is false.
func decodeCurator(service, node string, data []byte) (registry.Instance, error) {
	in, f, hasPort, err := decodeJSONAddress(service, node, data)
	if err != nil {
		return in, err
	}
	ssl, hasSSL, err := jsonobj.Int(f, "sslPort")
	switch {
	case err != nil:
		return in, err
	case hasPort:
	case hasSSL:
		return in, fmt.Errorf("only an sslPort (%d) and no port: TLS-only instances are not supported", ssl)
	default:
		return in, errors.New("no port")
	}
	if enabled, ok, err := jsonobj.Bool(f, "enabled"); err != nil {
		return in, err
	} else if ok && !enabled {
		in.Healthy = false
	}

	meta, err := metadata(f["payload"])
	if err != nil {
		return in, err
	}
	if len(meta) > 0 {
		in.Meta = meta
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			in.Tags = append(in.Tags, k+"="+meta[k])
		}
		if st, ok := meta["instance_status"]; ok && st != "UP" {
			in.Healthy = false
		}
	}
	return in, nil
}

// metadata reads payload.metadata when the payload is an object (Spring
// Cloud's ZookeeperInstance). A payload of another type is some other
// application's own Curator payload and is ignored; a metadata that is not
// an object is malformed.
func metadata(payload json.RawMessage) (map[string]string, error) {
	if jsonobj.Kind(payload) != "object" {
		return nil, nil
	}
	p, err := jsonobj.Object(payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	raw, ok := p["metadata"]
	if !ok || jsonobj.Kind(raw) == "null" {
		return nil, nil
	}
	if k := jsonobj.Kind(raw); k != "object" {
		return nil, fmt.Errorf("payload.metadata is %s, want an object", jsonobj.Article(k))
	}
	m, err := jsonobj.Object(raw)
	if err != nil {
		return nil, fmt.Errorf("payload.metadata: %w", err)
	}
	meta := map[string]string{}
	for k, v := range m {
		if jsonobj.Kind(v) != "string" {
			continue // numbers, lists, objects: not ours to interpret
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("payload.metadata.%s: %w", jsonobj.Clip(k), err)
		}
		meta[k] = s
	}
	return meta, nil
}

// springCloudInstance is the payload class Spring Cloud Zookeeper
// registers with.
const springCloudInstance = "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance"

// encodeCurator is Curator's ServiceInstance JSON as Spring Cloud
// Zookeeper writes it. The payload metadata holds the meta and the tags
// (a tag "k=v" as k: v, a tag without "=" as the key with an empty value)
// and instance_status UP, which the meta or a tag may override.
func encodeCurator(r Registration) ([]byte, error) {
	meta := map[string]string{"instance_status": "UP"}
	maps.Copy(meta, r.Meta)
	for _, t := range r.Tags {
		k, v, _ := strings.Cut(t, "=")
		meta[k] = v
	}
	type payload struct {
		Class    string            `json:"@class"`
		ID       string            `json:"id"`
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	return json.Marshal(struct {
		Name        string         `json:"name"`
		ID          string         `json:"id"`
		Address     string         `json:"address"`
		Port        int            `json:"port"`
		SSLPort     *int           `json:"sslPort"`
		Payload     payload        `json:"payload"`
		Registered  int64          `json:"registrationTimeUTC"`
		ServiceType string         `json:"serviceType"`
		URISpec     map[string]any `json:"uriSpec"`
		Enabled     bool           `json:"enabled"`
	}{r.Service, r.ID, r.Address, r.Port, nil,
		payload{springCloudInstance, r.Service, r.Service, meta},
		r.Registered.UnixMilli(), "DYNAMIC", map[string]any{"parts": []any{}}, true})
}
