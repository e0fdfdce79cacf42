package layout

import (
	"encoding/json"
	"errors"

	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// decodeService reads the service layout's JSON. Keys are matched exactly;
// unknown keys are ignored (an application may store more), but every
// known key must have its documented type.
func decodeService(service, id string, value []byte) (registry.Instance, error) {
	in := registry.Instance{Service: service, ID: id, Healthy: true}
	f, err := jsonobj.Object(value)
	if err != nil {
		return in, err
	}
	addr, ok, err := jsonobj.String(f, "address")
	if err != nil {
		return in, err
	}
	if !ok || addr == "" {
		return in, errors.New("no address")
	}
	in.Address = addr
	port, ok, err := jsonobj.Int(f, "port")
	if err != nil {
		return in, err
	}
	if !ok {
		return in, errors.New("no port")
	}
	in.Port = port
	if in.Tags, err = jsonobj.StringList(f, "tags"); err != nil {
		return in, err
	}
	if in.Meta, err = jsonobj.StringMap(f, "meta"); err != nil {
		return in, err
	}
	if healthy, ok, err := jsonobj.Bool(f, "healthy"); err != nil {
		return in, err
	} else if ok {
		in.Healthy = healthy
	}
	return in, nil
}

// encodeService is the service layout's JSON: address, port, and the tags
// and meta when there are any. healthy is left out: the registrar takes the
// instance out by deleting its key.
func encodeService(r Registration) ([]byte, error) {
	return json.Marshal(struct {
		Address string            `json:"address"`
		Port    int               `json:"port"`
		Tags    []string          `json:"tags,omitempty"`
		Meta    map[string]string `json:"meta,omitempty"`
	}{r.Address, r.Port, r.Tags, r.Meta})
}
