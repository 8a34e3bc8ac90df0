package prometheus

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/statepipe/statepipe/connect"
)

// labelPartition names a partition of a log connector's Source.
const labelPartition = "partition"

// NewSourceCollector returns a [prometheus.Collector] that exports the
// counts of a log connector's Source: any [connect.Reporter], such as the
// Sources of connect/jetstream and connect/kafka. Every scrape calls
// SourceStats once. The names start with the namespace and "source_":
//
//	name                           type     labels     meaning
//	source_fetched_total           counter             messages received from the log
//	source_redelivered_total       counter             of those, delivered before
//	source_done_total              counter             settled as processed: acked or committed
//	source_retried_total           counter             failed for now, left to the log to deliver again
//	source_dead_lettered_total     counter             failed for good and dead-lettered
//	source_decode_failed_total     counter             of the dead-lettered, rejected by Decode
//	source_released_total          counter             given back unprocessed (a drain, a lost partition)
//	source_published_total         counter             results the Sink published and the log confirmed
//	source_duplicates_total        counter             of those, results the log already had
//	source_held                    gauge               messages held now: fetched, not yet settled
//	source_held_bytes              gauge               their bodies' bytes
//	source_lag                     gauge               messages in the log not yet processed (absent while unknown)
//	source_partition_lag           gauge    partition  the same, per partition this process owns
//	source_partition_held          gauge    partition  messages of the partition held now
//
// Give each Source its own [WithConstLabels] to register several in one
// registry, beside the Pipelines' own collector.
func NewSourceCollector(src connect.Reporter, opts ...Option) prometheus.Collector {
	cfg := validate(opts)
	if _, ok := cfg.constLabels[labelPartition]; ok {
		cfg.problems = append(cfg.problems, `WithConstLabels: label "partition" is the source collector's own`)
	}
	if src == nil {
		cfg.problems = append(cfg.problems, "nil Source")
	}
	c := &sourceCollector{src: src}
	if len(cfg.problems) > 0 {
		c.err = errors.New("statepipe/prometheus: NewSourceCollector: " + strings.Join(cfg.problems, "; "))
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(cfg.namespace, "source", name), help, labels, cfg.constLabels)
	}
	c.counters = []sourceCounter{
		{desc("fetched_total", "Messages received from the log."), func(s *connect.SourceStats) uint64 { return s.Fetched }},
		{desc("redelivered_total", "Messages received that were delivered before, to this process or another."), func(s *connect.SourceStats) uint64 { return s.Redelivered }},
		{desc("done_total", "Messages settled as processed: acked or committed."), func(s *connect.SourceStats) uint64 { return s.Done }},
		{desc("retried_total", "Messages that failed for now and were left to the log to deliver again."), func(s *connect.SourceStats) uint64 { return s.Retried }},
		{desc("dead_lettered_total", "Messages that failed for good and were dead-lettered."), func(s *connect.SourceStats) uint64 { return s.DeadLettered }},
		{desc("decode_failed_total", "Dead-lettered messages that Decode rejected."), func(s *connect.SourceStats) uint64 { return s.DecodeFailed }},
		{desc("released_total", "Messages given back unprocessed, by a drain or a lost partition."), func(s *connect.SourceStats) uint64 { return s.Released }},
		{desc("published_total", "Results the Sink published and the log confirmed."), func(s *connect.SourceStats) uint64 { return s.Published }},
		{desc("duplicates_total", "Published results the log already had: a redelivered message's."), func(s *connect.SourceStats) uint64 { return s.Duplicates }},
	}
	c.held = desc("held", "Messages held now: fetched, not yet settled.")
	c.heldBytes = desc("held_bytes", "Bytes of the messages held now.")
	c.lag = desc("lag", "Messages in the log that this Source's consumer has not yet processed.")
	c.partLag = desc("partition_lag", "Messages of the partition after the last one settled.", labelPartition)
	c.partHeld = desc("partition_held", "Messages of the partition held now.", labelPartition)
	return c
}

type sourceCounter struct {
	desc *prometheus.Desc
	read func(*connect.SourceStats) uint64
}

type sourceCollector struct {
	src                                     connect.Reporter
	err                                     error
	counters                                []sourceCounter
	held, heldBytes, lag, partLag, partHeld *prometheus.Desc
}

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.err != nil {
		ch <- prometheus.NewInvalidDesc(c.err)
		return
	}
	for _, k := range c.counters {
		ch <- k.desc
	}
	for _, d := range []*prometheus.Desc{c.held, c.heldBytes, c.lag, c.partLag, c.partHeld} {
		ch <- d
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if c.err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(c.err), c.err)
		return
	}
	s := c.src.SourceStats()
	e := emitter{ch: ch}
	for _, k := range c.counters {
		e.counter(k.desc, float64(k.read(&s)))
	}
	e.gauge(c.held, float64(s.Held))
	e.gauge(c.heldBytes, float64(s.HeldBytes))
	if s.Lag >= 0 {
		e.gauge(c.lag, float64(s.Lag))
	}
	for _, p := range s.Partitions {
		if p.Lag >= 0 {
			e.gauge(c.partLag, float64(p.Lag), p.Name)
		}
		e.gauge(c.partHeld, float64(p.Held), p.Name)
	}
}
