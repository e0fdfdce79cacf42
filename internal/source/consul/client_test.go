package consul

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// A blocking read takes its buffer only once Consul answers: taken before,
// it would sit idle for the whole wait beside the answer the caller still
// holds (a third checks answer's worth of memory at 10,000 checks).
func TestBlockingReadTakesItsBufferWhenTheAnswerComes(t *testing.T) {
	c := testenv.StartConsul(t)
	c.Register(t, "web", "web-1", "127.0.0.1", 8080, nil, nil)
	client := testClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const path = "/v1/health/state/any"
	_, meta, err := client.getRaw(ctx, path, &api.QueryOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}

	var taken atomic.Bool
	type answer struct {
		body []byte
		err  error
	}
	done := make(chan answer, 1)
	mine := make([]byte, 0, 64<<10)
	go func() {
		body, _, err := client.getRaw(ctx, path, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second}, func() []byte {
			taken.Store(true)
			return mine
		})
		done <- answer{body, err}
	}()
	time.Sleep(500 * time.Millisecond)
	if taken.Load() {
		t.Fatal("the buffer was taken while the blocking query was still waiting")
	}
	select {
	case a := <-done:
		t.Fatalf("the blocking query returned without a change: %q, %v", a.body, a.err)
	default:
	}

	c.SetHealth(t, "web-1", api.HealthCritical)
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if !taken.Load() {
			t.Fatal("the answer was read without taking the buffer")
		}
		if !strings.Contains(string(a.body), `"critical"`) {
			t.Fatalf("answer after the change does not show it: %.300s", a.body)
		}
		if &a.body[0] != &mine[:1][0] {
			t.Fatal("the answer was not read into the buffer handed out")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer 20s after the change")
	}
}
