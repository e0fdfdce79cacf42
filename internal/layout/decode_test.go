package layout

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// upsyncDefault is the value nginx-upsync-module's README tells users to
// store for a server in etcd (and what the module itself writes back).
const upsyncDefault = `{"weight":1,"max_fails":2,"fail_timeout":10,"down":0}`

// springCloudUp is what a Spring Cloud Zookeeper application registered,
// verbatim as `zkCli get /services/cloud-provider-payment/<id>` printed it in
// a public tutorial (Curator's JsonInstanceSerializer output, payload a
// Spring Cloud ZookeeperInstance).
const springCloudUp = `{"name":"cloud-provider-payment","id":"ece4ce6c-a457-4874-8b3c-09f465e57939","address":"192.168.101.9","port":8004,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"cloud-provider-payment","name":"cloud-provider-payment","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1658569595889,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`

// springCloudNoStatus is an older Spring Cloud Zookeeper registration,
// verbatim from another public tutorial: empty metadata, no instance_status.
const springCloudNoStatus = `{"name":"waiter-service","id":"53565860-2cdd-493f-ac9d-f7d4a546cbf6","address":"10.20.14.30","port":52930,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"waiter-service-1","name":"waiter-service","metadata":{}},"registrationTimeUTC":1628750040704,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`

// curator builds a Curator JSON body around the given members.
func curator(members string) string {
	return `{"name":"web","id":"i1",` + members + `,"registrationTimeUTC":1,"serviceType":"DYNAMIC"}`
}

func spring(metadata string) string {
	return curator(`"address":"10.0.0.1","port":8080,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web-1","name":"web","metadata":` + metadata + `}`)
}

func ptr[T any](v T) *T { return &v }

func TestDecodeUpsync(t *testing.T) {
	tests := []struct {
		name, key, value string
		want             registry.Instance // Service "web" and ID key are filled in
		err              string            // substring of the error; "" for none
	}{
		{
			name: "nginx-upsync's own value is read parameter by parameter",
			key:  "10.0.0.1:8080", value: upsyncDefault,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{
				Weight: ptr(1), MaxFails: ptr(2), FailTimeout: ptr(10 * time.Second), Down: ptr(false)}},
		},
		{
			name: "an empty value takes the rules' defaults, as the module takes its own",
			key:  "10.0.0.1:8080",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "a whitespace-only value is an empty value",
			key:  "10.0.0.1:8080", value: " \n\t",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "an empty object takes the defaults as well",
			key:  "10.0.0.1:8080", value: `{}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "IPv6 comes in brackets",
			key:  "[2001:db8::1]:80",
			want: registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name: "every parameter, flags as 0 and 1, max_conns included",
			key:  "10.0.0.1:80", value: `{"weight":3,"max_fails":0,"fail_timeout":30,"max_conns":100,"backup":1,"down":0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(0), FailTimeout: ptr(30 * time.Second), MaxConns: ptr(100), Backup: ptr(true), Down: ptr(false)}},
		},
		{
			name: "decimal strings are numbers, as the module reads them",
			key:  "10.0.0.1:80", value: `{"weight":"3","max_fails":"0","fail_timeout":"30","down":"1"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(0), FailTimeout: ptr(30 * time.Second), Down: ptr(true)}},
		},
		{
			name: "keys are matched in any ASCII case, as cJSON matches them",
			key:  "10.0.0.1:80", value: `{"Weight":2,"MAX_FAILS":1,"Down":true}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(2), MaxFails: ptr(1), Down: ptr(true)}},
		},
		{
			name: "a Kelvin sign is not a k: a key only Unicode folding would match is unknown and ignored",
			key:  "10.0.0.1:80", value: `{"bac` + "\u212a" + `up":1}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true},
		},
		{
			name: "fail_timeout takes one nginx time unit",
			key:  "10.0.0.1:80", value: `{"fail_timeout":"2m"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{FailTimeout: ptr(2 * time.Minute)}},
		},
		{
			name: "fail_timeout in hours up to the limit",
			key:  "10.0.0.1:80", value: `{"fail_timeout":"24h"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{FailTimeout: ptr(24 * time.Hour)}},
		},
		{
			name: "whole numbers written as 3.0 or 3e0 are 3",
			key:  "10.0.0.1:80", value: `{"weight":3.0,"max_fails":3e0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{Weight: ptr(3), MaxFails: ptr(3)}},
		},
		{
			name: "null parameters are unset",
			key:  "10.0.0.1:80", value: `{"weight":null,"down":null,"fail_timeout":null}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true},
		},
		{
			name: "unknown keys are ignored, whatever they hold",
			key:  "10.0.0.1:80", value: `{"comment":";{}#\"\nserver 6.6.6.6:80;","owner":{"team":"x"},"weight":2}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{Weight: ptr(2)}},
		},
		// Passed on for registry.Build to refuse (see
		// etcd's TestLayoutSnapshotDropsHostileKeys): the layout reads, Build
		// validates.
		{
			name: "a hostname is passed on for Build to refuse",
			key:  "web.internal:8080",
			want: registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name: "port 0 is passed on for Build to refuse",
			key:  "10.0.0.1:0",
			want: registry.Instance{Address: "10.0.0.1", Port: 0, Healthy: true},
		},
		{
			name: "port 70000 is passed on for Build to refuse",
			key:  "10.0.0.1:70000",
			want: registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},
		{
			name: "a newline in the host is passed on for Build to refuse",
			key:  "10.0.0.1\nserver 6.6.6.6:80",
			want: registry.Instance{Address: "10.0.0.1\nserver 6.6.6.6", Port: 80, Healthy: true},
		},

		{name: "a name without a port is refused", key: "10.0.0.1", err: "not <ip>:<port>"},
		{name: "an empty port is refused", key: "10.0.0.1:", err: "ASCII digits"},
		{name: "a signed port is refused", key: "10.0.0.1:+80", err: "ASCII digits"},
		{name: "unicode digits in the port are refused", key: "10.0.0.1:８０", err: "ASCII digits"},
		{name: "six digits are refused", key: "10.0.0.1:000080", err: "ASCII digits"},
		{name: "a port with trailing text is refused", key: "10.0.0.1:80;", err: "ASCII digits"},
		{name: "an injected second server is refused", key: "10.0.0.1:80;server 6.6.6.6:80", err: "instance name"},
		{name: "bare IPv6 is refused", key: "2001:db8::1:80", err: "needs brackets"},
		{name: "brackets around IPv4 are refused", key: "[10.0.0.1]:80", err: "only an IPv6"},
		{name: "an unclosed bracket is refused", key: "[2001:db8::1:80", err: "only an IPv6"},
		{name: "a stray bracket is refused", key: "10.0.0.1]:80", err: "needs brackets"},

		{name: "a value that is not JSON is refused", key: "10.0.0.1:80", value: "weight=3", err: "not JSON"},
		{name: "a JSON list is refused", key: "10.0.0.1:80", value: `[` + upsyncDefault + `]`, err: "not a JSON object"},
		{name: "a JSON string is refused", key: "10.0.0.1:80", value: `"weight=3"`, err: "not a JSON object"},
		{name: "a bare number is refused", key: "10.0.0.1:80", value: `3`, err: "not a JSON object"},
		{name: "JSON null is refused", key: "10.0.0.1:80", value: `null`, err: "not a JSON object"},
		{name: "truncated JSON is refused", key: "10.0.0.1:80", value: `{"weight":1`, err: "bad JSON"},
		{name: "data after the object is refused", key: "10.0.0.1:80", value: upsyncDefault + `{"down":1}`, err: "data after"},
		{name: "invalid UTF-8 is refused", key: "10.0.0.1:80", value: "{\"x\":\"\xff\"}", err: "UTF-8"},
		{name: "a repeated parameter is refused", key: "10.0.0.1:80", value: `{"weight":1,"weight":100}`, err: "appears twice"},
		{name: "a parameter repeated in another case is refused", key: "10.0.0.1:80", value: `{"weight":1,"WEIGHT":100}`, err: "appears twice"},
		{name: "weight 0 is refused", key: "10.0.0.1:80", value: `{"weight":0}`, err: "weight 0 out of range"},
		{name: "weight above nginx's limit is refused", key: "10.0.0.1:80", value: `{"weight":10001}`, err: "weight 10001 out of range"},
		{name: "a negative weight is refused", key: "10.0.0.1:80", value: `{"weight":-1}`, err: "weight -1 out of range"},
		{name: "a fractional weight is refused, not truncated as cJSON would", key: "10.0.0.1:80", value: `{"weight":2.5}`, err: "whole number"},
		{name: "a huge weight is refused", key: "10.0.0.1:80", value: `{"weight":1e40}`, err: "whole number"},
		{name: "a weight beyond 64 bits is refused", key: "10.0.0.1:80", value: `{"weight":123456789012345678901234567890}`, err: "whole number"},
		{name: "a weight that wraps a 32-bit int is refused", key: "10.0.0.1:80", value: `{"weight":4294967297}`, err: "whole number"},
		{name: "a weight string with a trailing word is refused", key: "10.0.0.1:80", value: `{"weight":"1 backup"}`, err: "not a whole number"},
		{name: "a weight string with nginx syntax is refused", key: "10.0.0.1:80", value: `{"weight":"1;}"}`, err: "not a whole number"},
		{name: "a signed weight string is refused", key: "10.0.0.1:80", value: `{"weight":"+3"}`, err: "not a whole number"},
		{name: "a weight string with spaces is refused", key: "10.0.0.1:80", value: `{"weight":" 3"}`, err: "not a whole number"},
		{name: "a weight string of unicode digits is refused", key: "10.0.0.1:80", value: `{"weight":"３"}`, err: "not a whole number"},
		{name: "a weight given as a boolean is refused", key: "10.0.0.1:80", value: `{"weight":true}`, err: "weight is a boolean"},
		{name: "a weight given as a list is refused", key: "10.0.0.1:80", value: `{"weight":[1]}`, err: "weight is an array"},
		{name: "a weight given as an object is refused", key: "10.0.0.1:80", value: `{"weight":{}}`, err: "weight is an object"},
		{name: "a negative max_fails is refused", key: "10.0.0.1:80", value: `{"max_fails":-1}`, err: "max_fails -1 out of range"},
		{name: "max_fails above the limit is refused", key: "10.0.0.1:80", value: `{"max_fails":1001}`, err: "max_fails 1001 out of range"},
		{name: "max_conns above the limit is refused", key: "10.0.0.1:80", value: `{"max_conns":1000001}`, err: "max_conns 1000001 out of range"},
		{name: "a fail_timeout over a day is refused", key: "10.0.0.1:80", value: `{"fail_timeout":86401}`, err: "out of range"},
		{name: "a fail_timeout that would wrap around is refused", key: "10.0.0.1:80", value: `{"fail_timeout":2147483647}`, err: "out of range"},
		{name: "a fail_timeout in hours over a day is refused before multiplying", key: "10.0.0.1:80", value: `{"fail_timeout":"999999999h"}`, err: "out of range"},
		{name: "a negative fail_timeout is refused", key: "10.0.0.1:80", value: `{"fail_timeout":-1}`, err: "out of range"},
		{name: "a fail_timeout in milliseconds is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"500ms"}`, err: "want whole seconds"},
		{name: "a fail_timeout in days is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"1d"}`, err: "want whole seconds"},
		{name: "a fail_timeout unit alone is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"s"}`, err: "want whole seconds"},
		{name: "a fractional fail_timeout is refused", key: "10.0.0.1:80", value: `{"fail_timeout":0.5}`, err: "whole number"},
		{name: "down 2 is refused", key: "10.0.0.1:80", value: `{"down":2}`, err: "want 0, 1, true or false"},
		{name: "down as a word is refused", key: "10.0.0.1:80", value: `{"down":"yes"}`, err: "want 0, 1, true or false"},
		{name: "down as the string true is refused", key: "10.0.0.1:80", value: `{"down":"true"}`, err: "want 0, 1, true or false"},
		{name: "down as an object is refused", key: "10.0.0.1:80", value: `{"down":{}}`, err: "down is an object"},
		{name: "backup as a list is refused", key: "10.0.0.1:80", value: `{"backup":[1]}`, err: "backup is an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Upsync.Decode("web", tt.key, []byte(tt.value))
			tt.want.ID = tt.key
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func TestDecodeService(t *testing.T) {
	tests := []struct {
		name, value string
		want        registry.Instance // Service "web" and ID "i1" are filled in
		err         string
	}{
		{
			name:  "address, port, tags, meta and health are read",
			value: `{"address":"10.0.0.1","port":8080,"tags":["gray=canary","v2"],"meta":{"weight":"3","zone":"b"},"healthy":true}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Tags: []string{"gray=canary", "v2"}, Meta: map[string]string{"weight": "3", "zone": "b"}},
		},
		{
			name:  "address and port alone make a healthy instance",
			value: `{"address":"10.0.0.1","port":8080}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "healthy false makes the instance unhealthy",
			value: `{"address":"10.0.0.1","port":8080,"healthy":false}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false},
		},
		{
			name:  "null tags, meta and healthy are unset",
			value: `{"address":"10.0.0.1","port":8080,"tags":null,"meta":null,"healthy":null}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "empty tags and meta are fine",
			value: `{"address":"10.0.0.1","port":8080,"tags":[],"meta":{}}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Tags: []string{}, Meta: map[string]string{}},
		},
		{
			name:  "unknown keys are ignored: an application may store more",
			value: `{"id":"other","name":"other","version":"1.2","address":"10.0.0.1","port":8080,"extra":[1,{"a":null}]}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "an IPv6 address is written without brackets",
			value: `{"address":"2001:db8::1","port":80}`,
			want:  registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name:  "whitespace around the JSON is fine",
			value: "\n {\"address\":\"10.0.0.1\",\"port\":8080}\n",
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "unicode in tags and meta is read as is; Build decides",
			value: `{"address":"10.0.0.1","port":8080,"tags":["zöne=ü"],"meta":{"ключ":"значение"}}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Tags: []string{"zöne=ü"}, Meta: map[string]string{"ключ": "значение"}},
		},
		// Passed on for registry.Build to refuse.
		{
			name:  "a hostname is passed on for Build to refuse",
			value: `{"address":"web.internal","port":8080}`,
			want:  registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name:  "nginx syntax in the address is passed on for Build to refuse",
			value: `{"address":"10.0.0.1;server 6.6.6.6:80;#{}\"","port":8080}`,
			want:  registry.Instance{Address: "10.0.0.1;server 6.6.6.6:80;#{}\"", Port: 8080, Healthy: true},
		},
		{
			name:  "port 0 is passed on for Build to refuse",
			value: `{"address":"10.0.0.1","port":0}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 0, Healthy: true},
		},
		{
			name:  "port 70000 is passed on for Build to refuse",
			value: `{"address":"10.0.0.1","port":70000}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},

		{name: "no address is refused", value: `{"port":8080}`, err: "no address"},
		{name: "an empty address is refused", value: `{"address":"","port":8080}`, err: "no address"},
		{name: "a null address is refused", value: `{"address":null,"port":8080}`, err: "no address"},
		{name: "keys are matched exactly, not case-folded", value: `{"Address":"10.0.0.1","PORT":8080}`, err: "no address"},
		{name: "no port is refused", value: `{"address":"10.0.0.1"}`, err: "no port"},
		{name: "a null port is refused", value: `{"address":"10.0.0.1","port":null}`, err: "no port"},
		{name: "an address given as a number is refused", value: `{"address":167772161,"port":8080}`, err: "address is a number"},
		{name: "an address given as a list is refused", value: `{"address":["10.0.0.1"],"port":8080}`, err: "address is an array"},
		{name: "a port given as a string is refused", value: `{"address":"10.0.0.1","port":"8080"}`, err: "port is a string"},
		{name: "a fractional port is refused", value: `{"address":"10.0.0.1","port":8080.0}`, err: "not a 32-bit integer"},
		{name: "an exponent port is refused", value: `{"address":"10.0.0.1","port":8e3}`, err: "not a 32-bit integer"},
		{name: "a huge port is refused", value: `{"address":"10.0.0.1","port":123456789012345678901234567890}`, err: "not a 32-bit integer"},
		{name: "a port beyond 32 bits is refused before it can wrap", value: `{"address":"10.0.0.1","port":4294975376}`, err: "not a 32-bit integer"},
		{name: "a port given as a boolean is refused", value: `{"address":"10.0.0.1","port":true}`, err: "port is a boolean"},
		{name: "tags given as a string are refused", value: `{"address":"10.0.0.1","port":8080,"tags":"a,b"}`, err: "tags is a string"},
		{name: "a tag that is not a string is refused", value: `{"address":"10.0.0.1","port":8080,"tags":["a",1]}`, err: "tags[1] is a number"},
		{name: "meta given as a list is refused", value: `{"address":"10.0.0.1","port":8080,"meta":["weight=3"]}`, err: "meta is an array"},
		{name: "a meta value that is not a string is refused", value: `{"address":"10.0.0.1","port":8080,"meta":{"weight":3}}`, err: `meta."weight" is a number`},
		{name: "a repeated meta key is refused", value: `{"address":"10.0.0.1","port":8080,"meta":{"gray":"a","gray":"b"}}`, err: "appears twice"},
		{name: "healthy given as a string is refused", value: `{"address":"10.0.0.1","port":8080,"healthy":"false"}`, err: "healthy is a string"},
		{name: "healthy given as a number is refused", value: `{"address":"10.0.0.1","port":8080,"healthy":0}`, err: "healthy is a number"},
		{name: "a repeated key is refused: readers could disagree", value: `{"address":"10.0.0.1","address":"6.6.6.6","port":8080}`, err: "appears twice"},
		{name: "an empty value is refused", value: "", err: "not JSON"},
		{name: "a value that is not JSON is refused", value: "10.0.0.1:8080", err: "not a JSON object"},
		{name: "a value of text is refused", value: "address=10.0.0.1", err: "not JSON"},
		{name: "a JSON list is refused", value: `[{"address":"10.0.0.1","port":8080}]`, err: "not a JSON object"},
		{name: "a JSON string is refused", value: `"10.0.0.1:8080"`, err: "not a JSON object"},
		{name: "data after the object is refused", value: `{"address":"10.0.0.1","port":8080}{"address":"6.6.6.6"}`, err: "data after"},
		{name: "truncated JSON is refused", value: `{"address":"10.0.0.1","port":80`, err: "bad JSON"},
		{name: "a JavaScript comment is refused", value: `{"address":"10.0.0.1",/*x*/"port":8080}`, err: "bad JSON"},
		{name: "invalid UTF-8 is refused, not replaced", value: "{\"address\":\"10.0.0.1\",\"port\":8080,\"tags\":[\"\xc3\x28\"]}", err: "UTF-8"},
		{name: "garbage is refused", value: "\x00\xff;server 6.6.6.6:80;", err: "UTF-8"},
		{name: "absurd nesting is refused", value: `{"address":"10.0.0.1","port":8080,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, err: "bad JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Service.Decode("web", "i1", []byte(tt.value))
			tt.want.ID = "i1"
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func TestDecodeCurator(t *testing.T) {
	tests := []struct {
		name string
		data string
		want registry.Instance // Service "web" and ID "i1" are filled in
		err  string            // substring of the error; "" for none
	}{
		{
			name: "a real Spring Cloud registration gives address, port, metadata as meta and tags",
			data: springCloudUp,
			want: registry.Instance{Address: "192.168.101.9", Port: 8004, Healthy: true,
				Meta: map[string]string{"instance_status": "UP"}, Tags: []string{"instance_status=UP"}},
		},
		{
			name: "a registration without instance_status is healthy",
			data: springCloudNoStatus,
			want: registry.Instance{Address: "10.20.14.30", Port: 52930, Healthy: true},
		},
		{
			name: "instance_status OUT_OF_SERVICE makes the instance unhealthy",
			data: spring(`{"instance_status":"OUT_OF_SERVICE"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false,
				Meta: map[string]string{"instance_status": "OUT_OF_SERVICE"}, Tags: []string{"instance_status=OUT_OF_SERVICE"}},
		},
		{
			name: "instance_status is compared exactly",
			data: spring(`{"instance_status":"up"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false,
				Meta: map[string]string{"instance_status": "up"}, Tags: []string{"instance_status=up"}},
		},
		{
			name: "Curator's enabled false makes the instance unhealthy",
			data: curator(`"address":"10.0.0.1","port":8080,"enabled":false`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false},
		},
		{
			name: "enabled true is healthy",
			data: curator(`"address":"10.0.0.1","port":8080,"enabled":true`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "metadata gray becomes the canary tag, sorted with the others",
			data: spring(`{"zone":"b","gray":"canary","weight":"3"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Meta: map[string]string{"zone": "b", "gray": "canary", "weight": "3"},
				Tags: []string{"gray=canary", "weight=3", "zone=b"}},
		},
		{
			name: "non-string metadata values are ignored",
			data: spring(`{"n":3,"b":true,"l":["x"],"o":{"k":"v"},"z":null,"ok":"yes"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Meta: map[string]string{"ok": "yes"}, Tags: []string{"ok=yes"}},
		},
		{
			name: "a payload that is not an object is another application's own and ignored",
			data: curator(`"address":"10.0.0.1","port":8080,"payload":"opaque"`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "a null payload and null metadata are fine",
			data: curator(`"address":"10.0.0.1","port":8080,"payload":{"metadata":null}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "port wins over sslPort when both are set",
			data: curator(`"address":"10.0.0.1","port":8080,"sslPort":8443`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "the JSON's name and id do not matter: the path does, as in Curator",
			data: `{"name":"other","id":"x","address":"10.0.0.1","port":8080}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "whitespace around the JSON is fine",
			data: " \n\t" + springCloudNoStatus + "\n",
			want: registry.Instance{Address: "10.20.14.30", Port: 52930, Healthy: true},
		},
		// Values the layout passes on for registry.Build to refuse (see
		// zookeeper's TestLayoutSnapshotDropsHostileZnodes): the layout reads, Build
		// validates.
		{
			name: "a hostname is passed on for Build to refuse",
			data: curator(`"address":"DESKTOP-7CK6BAS","port":8004`),
			want: registry.Instance{Address: "DESKTOP-7CK6BAS", Port: 8004, Healthy: true},
		},

		{name: "only an sslPort is refused: plain traffic to a TLS port fails", data: curator(`"address":"10.0.0.1","port":null,"sslPort":8443`), err: "TLS-only"},
		{name: "no port at all is refused", data: curator(`"address":"10.0.0.1","port":null`), err: "no port"},
		{name: "no address is refused", data: curator(`"port":8080`), err: "no address"},
		{name: "a null address is refused", data: curator(`"address":null,"port":8080`), err: "no address"},
		{name: "keys are matched exactly, not case-folded", data: `{"Address":"10.0.0.1","PORT":8080}`, err: "no address"},
		{name: "a port given as a string is refused", data: curator(`"address":"10.0.0.1","port":"8080"`), err: "port is a string"},
		{name: "a fractional port is refused", data: curator(`"address":"10.0.0.1","port":8080.0`), err: "not a 32-bit integer"},
		{name: "an exponent port is refused", data: curator(`"address":"10.0.0.1","port":8e3`), err: "not a 32-bit integer"},
		{name: "a huge port is refused", data: curator(`"address":"10.0.0.1","port":99999999999999999999999`), err: "not a 32-bit integer"},
		{name: "a port beyond 32 bits is refused before it can wrap", data: curator(`"address":"10.0.0.1","port":4294975376`), err: "not a 32-bit integer"},
		{name: "an address given as a number is refused", data: curator(`"address":167772161,"port":8080`), err: "address is a number"},
		{name: "an address given as a list is refused", data: curator(`"address":["10.0.0.1"],"port":8080`), err: "address is an array"},
		{name: "enabled given as a string is refused", data: curator(`"address":"10.0.0.1","port":8080,"enabled":"false"`), err: "enabled is a string"},
		{name: "metadata that is not an object is refused", data: spring(`"instance_status=UP"`), err: "payload.metadata is a string"},
		{name: "a repeated key is refused: readers could disagree", data: `{"address":"10.0.0.1","address":"6.6.6.6","port":8080}`, err: "appears twice"},
		{name: "a repeated metadata key is refused", data: spring(`{"gray":"a","gray":"b"}`), err: "appears twice"},
		{name: "empty data is refused", data: "", err: "not JSON"},
		{name: "truncated JSON is refused", data: springCloudUp[:100], err: "bad JSON"},
		{name: "a JSON list is refused", data: `[` + springCloudUp + `]`, err: "not a JSON object"},
		{name: "a JSON string is refused", data: `"10.0.0.1:8080"`, err: "not a JSON object"},
		{name: "data after the object is refused", data: springCloudUp + `{"address":"6.6.6.6"}`, err: "data after"},
		{name: "garbage is refused", data: "\x00;server 6.6.6.6:80;", err: "not JSON"},
		{name: "invalid UTF-8 is refused", data: "\x00\xff;server 6.6.6.6:80;", err: "not valid UTF-8"},
		{name: "a JavaScript comment is refused", data: `{"address":"10.0.0.1",/*x*/"port":8080}`, err: "bad JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Curator.Decode("web", "i1", []byte(tt.data))
			tt.want.ID = "i1"
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func TestDecodePlain(t *testing.T) {
	tests := []struct {
		name, node, data string
		want             registry.Instance // Service "web" and ID node are filled in
		err              string
	}{
		{
			name: "the znode name is the address and empty data takes the defaults",
			node: "10.0.0.1:8080",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "IPv6 comes in brackets",
			node: "[2001:db8::1]:80",
			want: registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name: "whitespace-only data is empty data",
			node: "10.0.0.1:8080", data: " \n",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "nginx-upsync parameters are read, 0/1 flags included",
			node: "10.0.0.1:8080", data: `{"weight":3,"max_fails":2,"fail_timeout":10,"max_conns":100,"backup":1,"down":0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(2), FailTimeout: ptr(10 * time.Second), MaxConns: ptr(100), Backup: ptr(true), Down: ptr(false)}},
		},
		{
			name: "JSON booleans work for the flags and unknown keys are ignored",
			node: "10.0.0.1:8080", data: `{"down":true,"comment":"drain"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{Down: ptr(true)}},
		},
		{
			name: "a hostname is passed on for Build to refuse",
			node: "web.internal:8080",
			want: registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name: "port 70000 is passed on for Build to refuse",
			node: "10.0.0.1:70000",
			want: registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},

		{name: "a name without a port is refused", node: "10.0.0.1", err: "not <ip>:<port>"},
		{name: "an empty port is refused", node: "10.0.0.1:", err: "ASCII digits"},
		{name: "a signed port is refused", node: "10.0.0.1:+80", err: "ASCII digits"},
		{name: "unicode digits in the port are refused", node: "10.0.0.1:８０", err: "ASCII digits"},
		{name: "six digits are refused", node: "10.0.0.1:000080", err: "ASCII digits"},
		{name: "a port with trailing text is refused", node: "10.0.0.1:80;", err: "ASCII digits"},
		{name: "an injected second server is refused", node: "10.0.0.1:80;server 6.6.6.6:80", err: "znode name"},
		{name: "bare IPv6 is refused", node: "2001:db8::1:80", err: "needs brackets"},
		{name: "brackets around IPv4 are refused", node: "[10.0.0.1]:80", err: "only an IPv6"},
		{name: "an unclosed bracket is refused", node: "[2001:db8::1:80", err: "only an IPv6"},
		{name: "a stray bracket is refused, as in the upsync layout", node: "10.0.0.1]:80", err: "needs brackets"},
		{name: "data that is not JSON is refused", node: "10.0.0.1:80", data: "weight=3", err: "not JSON"},
		{name: "a weight given as a string is refused", node: "10.0.0.1:80", data: `{"weight":"3"}`, err: "weight is a string"},
		{name: "weight 0 is refused", node: "10.0.0.1:80", data: `{"weight":0}`, err: "weight 0 out of range"},
		{name: "a huge weight is refused", node: "10.0.0.1:80", data: `{"weight":1e9}`, err: "not a 32-bit integer"},
		{name: "a negative max_fails is refused", node: "10.0.0.1:80", data: `{"max_fails":-1}`, err: "max_fails -1 out of range"},
		{name: "a fail_timeout that would wrap around is refused", node: "10.0.0.1:80", data: `{"fail_timeout":2147483647}`, err: "fail_timeout 2147483647 out of range"},
		{name: "a fail_timeout given as text is refused", node: "10.0.0.1:80", data: `{"fail_timeout":"10s"}`, err: "fail_timeout is a string"},
		{name: "down 2 is refused", node: "10.0.0.1:80", data: `{"down":2}`, err: "want 0, 1, true or false"},
		{name: "a repeated parameter is refused", node: "10.0.0.1:80", data: `{"weight":1,"weight":100}`, err: "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plain.Decode("web", tt.node, []byte(tt.data))
			tt.want.ID = tt.node
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

// checkInstance compares a decoded instance of service "web" with want,
// or the error with wantErr, which never carries a raw line break.
func checkInstance(t *testing.T, got registry.Instance, err error, want registry.Instance, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want one containing %q", err, wantErr)
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("error carries a raw line break: %q", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	want.Service = "web"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}
