package prometheus_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statepipe/statepipe"
)

// TestCollectorHTTP scrapes /metrics through promhttp on a loopback
// listener.
func TestCollectorHTTP(t *testing.T) {
	const n = 24
	p, reg := newRegistered(t, statepipe.WithObserver(nothing))
	runSequential(t, p, n)
	p.Close()

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	if u, _ := url.Parse(srv.URL); u.Hostname() != "127.0.0.1" {
		t.Fatalf("server on %s, want loopback", u.Host)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q, want the text exposition format", ct)
	}
	e := expect(n)
	text := string(body)
	for _, line := range []string{
		"# TYPE statepipe_requests_submitted_total counter",
		fmt.Sprintf(`statepipe_requests_submitted_total{pipeline="test"} %d`, e.submitted),
		fmt.Sprintf(`statepipe_requests_failed_total{pipeline="test"} %d`, e.failed),
		fmt.Sprintf(`statepipe_stage_runs_total{pipeline="test",stage="Fix"} %d`, e.fix),
		fmt.Sprintf(`statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="idle"} %d`, e.store),
		"# TYPE statepipe_stage_duration_seconds histogram",
		`statepipe_stage_duration_seconds_bucket{pipeline="test",stage="Start",le="2.56e-07"} `,
		fmt.Sprintf(`statepipe_stage_duration_seconds_bucket{pipeline="test",stage="Start",le="+Inf"} %d`, e.start),
		fmt.Sprintf(`statepipe_stage_duration_seconds_count{pipeline="test",stage="Start"} %d`, e.start),
		"# TYPE statepipe_batch_flush_duration_seconds summary",
		fmt.Sprintf(`statepipe_batch_flush_duration_seconds_count{batcher="store",pipeline="test"} %d`, e.store),
	} {
		if !hasLine(text, line) {
			t.Errorf("no line %q in the exposition:\n%s", line, text)
		}
	}
}

// hasLine reports whether a line of text starts with prefix (the whole
// line, when prefix has no trailing space).
func hasLine(text, prefix string) bool {
	for l := range strings.Lines(text) {
		l = strings.TrimSuffix(l, "\n")
		if l == prefix || strings.HasSuffix(prefix, " ") && strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
