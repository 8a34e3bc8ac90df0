package prometheus_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

func TestCollectorRegister(t *testing.T) {
	p, err := statepipe.New[job](newMachine())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want string // in the error; "" for none
	}{
		{"defaults", spprom.NewCollector(p), ""},
		{"namespace", spprom.NewCollector(p, spprom.WithNamespace("orders")), ""},
		{"no namespace", spprom.NewCollector(p, spprom.WithNamespace("")), ""},
		{"nil pipelines", spprom.NewCollector[job](nil), "nil Pipelines"},
		{"nil option", spprom.NewCollector(p, nil), "nil Option"},
		{"bad namespace", spprom.NewCollector(p, spprom.WithNamespace("my-app")), `"my-app" is not a valid metric name prefix`},
		{"own label", spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"stage": "x"})), `label "stage" is the collector's own`},
		{"bad label", spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"my label": "x"})), `"my label" is not a valid label name`},
		{"reserved label", spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"__name__": "x"})), `"__name__" is not a valid label name`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := prometheus.NewRegistry().Register(c.c)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Register: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("Register: %v, want an error with %q", err, c.want)
			}
		})
	}

	t.Run("two pipelines", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(spprom.NewCollector(p))
		if err := reg.Register(spprom.NewCollector(p)); err == nil {
			t.Error("a second collector with the same names and labels registered")
		}
		reg = prometheus.NewRegistry()
		for _, name := range []string{"a", "b"} {
			if err := reg.Register(spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"pipeline": name}))); err != nil {
				t.Errorf("pipeline=%q: %v", name, err)
			}
		}
		if _, err := reg.Gather(); err != nil {
			t.Error(err)
		}
	})
}
