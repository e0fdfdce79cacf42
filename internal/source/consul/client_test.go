package consul

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// watchedTransport tells when a request goes out and when its answer's
// headers come back.
type watchedTransport struct {
	inner    http.RoundTripper
	sent     chan struct{} // closed when the first request goes out
	once     atomic.Bool
	answered atomic.Bool // the answer to a request has come
}

func (w *watchedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if w.once.CompareAndSwap(false, true) {
		close(w.sent)
	}
	resp, err := w.inner.RoundTrip(r)
	w.answered.Store(true)
	return resp, err
}

// A blocking read takes its buffer only once Consul answers: taken before,
// it would sit idle for the whole wait beside the answer the caller still
// holds (a third checks answer's worth of memory at 10,000 checks).
//
// What proves the absence: the request was on its way to Consul, the
// buffer was not taken, and after that look no answer had come yet.
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

	// Only getRaw uses cfg.HttpClient; watch the blocking read's request.
	watch := &watchedTransport{inner: client.cfg.HttpClient.Transport, sent: make(chan struct{})}
	hc := *client.cfg.HttpClient
	hc.Transport = watch
	client.cfg.HttpClient = &hc

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
	select {
	case <-watch.sent:
	case <-time.After(20 * time.Second):
		t.Fatal("the blocking read never sent its request")
	}
	wasTaken := taken.Load()
	if watch.answered.Load() {
		a := <-done
		t.Fatalf("Consul answered the blocking query without a change: %.300q, %v", a.body, a.err)
	}
	if wasTaken {
		t.Fatal("the buffer was taken while the request was out and no answer had come")
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
