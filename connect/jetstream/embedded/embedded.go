// Package embedded runs a NATS server with JetStream inside the process:
// for tests, demos and local runs, so that nothing needs installing.
//
// It is a package of its own so that programs that only connect to a NATS
// server (the [github.com/statepipe/statepipe/connect/jetstream] Source)
// do not link the server.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// An Option configures [Start].
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	port  int
	ready time.Duration
}

// Port makes the server listen on port instead of a random free one: to
// restart a server where its clients will reconnect. The default is a
// random port.
func Port(port int) Option {
	return optionFunc(func(c *config) { c.port = port })
}

// Start starts a NATS server with JetStream that keeps its streams in
// files under storeDir, listening on 127.0.0.1 only, and waits until it
// accepts connections. It returns the URL for clients (nats://127.0.0.1:PORT)
// and shutdown, which stops the server, waits until it has stopped, and
// may be called more than once. A server started again on the same
// storeDir (and [Port], for its clients to find it) has every stream,
// consumer and message the first one stored.
//
// The server logs nothing and leaves the process's signals alone.
func Start(storeDir string, opts ...Option) (url string, shutdown func(), err error) {
	c := config{port: server.RANDOM_PORT, ready: 10 * time.Second}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if storeDir == "" {
		return "", nil, errors.New("embedded: empty store directory")
	}
	if c.port < 0 && c.port != server.RANDOM_PORT || c.port > 65535 {
		return "", nil, fmt.Errorf("embedded: invalid port %d", c.port)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "statepipe-embedded",
		Host:       "127.0.0.1",
		Port:       c.port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return "", nil, fmt.Errorf("embedded: %w", err)
	}
	go ns.Start()
	var once sync.Once
	shutdown = func() {
		once.Do(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
	}
	if !ns.ReadyForConnections(c.ready) {
		shutdown()
		return "", nil, fmt.Errorf("embedded: server not ready after %v (is port %d free?)", c.ready, c.port)
	}
	if !ns.JetStreamEnabled() {
		shutdown()
		return "", nil, errors.New("embedded: JetStream did not start")
	}
	return ns.ClientURL(), shutdown, nil
}

// PortOf returns the port of a URL that Start returned, for [Port].
func PortOf(serverURL string) (int, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return 0, err
	}
	_, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}
