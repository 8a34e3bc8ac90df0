package prometheus

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// An Option configures [NewCollector].
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	namespace   string
	constLabels prometheus.Labels
	problems    []string
}

// WithNamespace sets the prefix of every metric name: "orders" makes
// orders_requests_submitted_total. The default is "statepipe"; "" leaves
// the names unprefixed (requests_submitted_total). The namespace must
// keep to the classic metric name characters, [a-zA-Z_:][a-zA-Z0-9_:]*,
// which every Prometheus-compatible store accepts; another fails in
// Register.
func WithNamespace(ns string) Option {
	return optionFunc(func(c *config) { c.namespace = ns })
}

// WithConstLabels adds labels with fixed values to every metric, such as
// {"pipeline": "orders"}: give each Pipelines its own value to register
// several collectors in one registry. May be given more than once; later
// values win. None by default. Label names must keep to the classic
// characters, [a-zA-Z_][a-zA-Z0-9_]*, and must not start with "__"; the
// names stage, batcher and reason are the collector's own. A name that
// breaks these rules fails in Register.
func WithConstLabels(labels prometheus.Labels) Option {
	return optionFunc(func(c *config) {
		if c.constLabels == nil {
			c.constLabels = prometheus.Labels{}
		}
		for k, v := range labels {
			c.constLabels[k] = v
		}
	})
}

// validate applies opts over the defaults and collects what is wrong.
func validate(opts []Option) config {
	c := config{namespace: "statepipe"}
	for _, o := range opts {
		if o == nil {
			c.problems = append(c.problems, "nil Option")
			continue
		}
		o.apply(&c)
	}
	if c.namespace != "" && !model.LegacyValidation.IsValidMetricName(c.namespace) {
		c.problems = append(c.problems, fmt.Sprintf("WithNamespace: %q is not a valid metric name prefix", c.namespace))
	}
	for _, k := range slices.Sorted(maps.Keys(c.constLabels)) {
		switch {
		case k == labelStage || k == labelBatcher || k == labelReason:
			c.problems = append(c.problems, fmt.Sprintf("WithConstLabels: label %q is the collector's own", k))
		case !model.LegacyValidation.IsValidLabelName(k) || strings.HasPrefix(k, "__"):
			c.problems = append(c.problems, fmt.Sprintf("WithConstLabels: %q is not a valid label name", k))
		}
	}
	return c
}
