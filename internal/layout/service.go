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
	in, f, hasPort, err := decodeJSONAddress(service, id, value)
	if err != nil {
		return in, err
	}
	if !hasPort {
		return in, errors.New("no port")
	}
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

// decodeJSONAddress starts the instance id of service from a value that
// must be a JSON object with a non-empty "address" and may have an
// integer "port" (hasPort says whether it has); the decoders of the JSON
// layouts read the rest of the object, f.
func decodeJSONAddress(service, id string, value []byte) (in registry.Instance, f object, hasPort bool, err error) {
	in = registry.Instance{Service: service, ID: id, Healthy: true}
	if f, err = jsonobj.Object(value); err != nil {
		return in, nil, false, err
	}
	if in.Address, _, err = jsonobj.String(f, "address"); err != nil {
		return in, nil, false, err
	}
	if in.Address == "" {
		return in, nil, false, errors.New("no address")
	}
	in.Port, hasPort, err = jsonobj.Int(f, "port")
	return in, f, hasPort, err
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
