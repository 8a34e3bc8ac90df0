package embedded_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe/connect/jetstream/embedded"
)

// A stream written to one server is there after a restart on the same
// directory and port.
func TestRestartKeepsStreams(t *testing.T) {
	dir := t.TempDir()
	url, shutdown, err := embedded.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Errorf("URL %s: want loopback", url)
	}
	ctx := context.Background()
	withJS := func(url string, f func(js jetstream.JetStream)) {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		f(js)
	}
	withJS(url, func(js jetstream.JetStream) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "s", []byte("kept")); err != nil {
			t.Fatal(err)
		}
	})
	shutdown()
	shutdown() // harmless

	port, err := embedded.PortOf(url)
	if err != nil {
		t.Fatal(err)
	}
	url2, shutdown2, err := embedded.Start(dir, embedded.Port(port))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown2()
	if url2 != url {
		t.Errorf("restarted at %s, want %s", url2, url)
	}
	withJS(url2, func(js jetstream.JetStream) {
		s, err := js.Stream(ctx, "S")
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n != 1 {
			t.Errorf("%d messages after the restart, want 1", n)
		}
	})
}

func TestBadArguments(t *testing.T) {
	if _, _, err := embedded.Start(""); err == nil {
		t.Error("Start with no directory: no error")
	}
	if _, _, err := embedded.Start(t.TempDir(), embedded.Port(70000)); err == nil {
		t.Error("Start on port 70000: no error")
	}
}
