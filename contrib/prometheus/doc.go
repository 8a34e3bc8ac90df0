// Package prometheus exports the statistics of a [statepipe.Pipelines] as
// Prometheus metrics.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"pipeline": "orders"})))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// [NewSourceCollector] exports, the same way, the counts and lag of a log
// connector's Source (connect/jetstream, connect/kafka: any
// connect.Reporter).
//
// # Cost
//
// The collector reads [statepipe.Pipelines.Stats] once per scrape and
// installs no hook and no [statepipe.Observer]: requests pay nothing for
// it. A scrape costs about 150µs of CPU, most of it in rendering the text
// (BenchmarkScrape): scraped every 100ms, 0.15% of one core. Scraping W1
// (four trivial stages, a million items) every 100ms measured within 1%
// of the same run with a 100ms ticker that does nothing, and about 6%
// slower than W1 alone, on two cores (BenchmarkW1).
//
// # Metrics
//
// Every name starts with the namespace ([WithNamespace], default
// "statepipe"), and every series carries the labels of [WithConstLabels].
//
//	name                                    type       labels           meaning
//	requests_submitted_total                counter                     requests accepted by Submit
//	requests_completed_total                counter                     requests that came out with Err == nil
//	requests_failed_total                   counter                     requests that came out with an error
//	requests_in_flight                      gauge                       requests inside the machine: queued, running or parked
//	requests_queued                         gauge                       requests waiting for a worker
//	requests_running                        gauge                       requests on a worker now
//	requests_parked                         gauge                       requests held by batchers
//	requests_buffered                       gauge                       results in open groups' outputs, not yet received
//	requests_retrying                       gauge                       requests waiting out a retry's backoff
//	keys                                    gauge                       keys with a request inside (WithKey)
//	keys_waiting                            gauge                       keys with requests waiting for their turn
//	key_waiting_requests                    gauge                       requests waiting for their key's turn
//	key_longest_wait_seconds                gauge                       the longest wait of a request for its key so far
//	workers                                 gauge                       worker goroutines
//	worker_changes_total                    counter    reason           with WithAutoscale: changes of the count, by reason (up, undo, down)
//	groups                                  gauge                       open groups
//	queue_duration_seconds                  summary                     Submit until a worker picks the request up (sampled)
//	run_duration_seconds                    summary                     pick-up until out, parked time included (sampled)
//	stage_runs_total                        counter    stage            calls of the stage
//	stage_errors_total                      counter    stage            calls that ended with the request's Err set, panics included
//	stage_retries_total                     counter    stage            of those, calls retried after a backoff (statepipe.Retry)
//	stage_duration_seconds                  histogram  stage            duration of the stage's timed calls (sampled)
//	batch_flushes_total                     counter    batcher, reason  flush calls, by trigger: size, bytes, linger, idle, shutdown
//	batch_items_total                       counter    batcher          requests flushed
//	batch_items_failed_total                counter    batcher          requests a flush failed (its error, or their own)
//	batch_items_cancelled_total             counter    batcher          requests whose context ended while parked
//	batch_items_parked                      gauge      batcher          requests parked in the batcher now
//	batch_items_retried_total               counter    batcher          requests a flush failed with a marked error, rejoining after a backoff
//	batch_flush_duration_seconds            summary    batcher          duration of the flush calls
//	batch_park_duration_seconds             summary    batcher          Add until the flush ended (or the context did)
//
// Every stage found by New is exported from the start, with zeros; a
// batcher appears once it has taken its first request, with every flush
// reason, zeros included. Batchers are labelled by their [statepipe.BatchName];
// batchers that share a name are added up into one set of series.
//
// # Sampling
//
// The engine times one request in 32 (every
// request while an Observer is set), so the _count of
// stage_duration_seconds, queue_duration_seconds and run_duration_seconds
// counts the timed requests and runs, not all of them: _sum / _count is
// the mean, and the buckets the distribution, of that sample. Use
// stage_runs_total for how many calls there were. The sample is regular,
// not random: if routing follows submission order (every tenth item to a
// stage), a stage's share of timed runs can differ from its share of runs.
//
// # Choices
//
// stage_duration_seconds is a real histogram: the core keeps latency in
// fixed buckets (powers of two from 256ns to about 68s, see
// [statepipe.BucketBounds]), which become the histogram's le bounds in
// seconds, cumulative, with the core's unbounded last bucket as +Inf. So
// histogram_quantile works and histograms add up across instances. That
// is 32 series per stage.
//
// The other durations (queue, run, flush, park) are kept by the core as
// count, min, average and max only. They are exported as summaries with a
// _count and a _sum and no quantiles: rate(x_sum[5m]) / rate(x_count[5m])
// gives the mean over any window, which gauges of the lifetime average and
// maximum could not (a lifetime maximum never comes down after one slow
// flush). The mean fill of a batch is batch_items_total over
// batch_flushes_total, summed over reasons.
//
// Groups are not exported one by one: a group's id is new for every
// NewGroup, and programs that open a group per call or per connection
// would create series without bound, each gone when its group closes. The
// groups gauge and requests_buffered (the sum of the groups' buffered
// results, the share of the memory bound held by slow consumers) are their
// aggregate.
//
// # Freshness
//
// While work goes on, Stats trails by up to 64 requests per worker; once
// the Pipelines are idle or closed it is exact. requests_submitted_total
// is derived by Stats from figures read at slightly different moments;
// the collector never lets it, nor a duration sum, go down between
// scrapes, so rate() sees no false counter reset.
package prometheus
