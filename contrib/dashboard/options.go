package dashboard

import "time"

// Option configures a Dashboard.
type Option interface{ apply(*config) }

type config struct {
	title   string
	refresh time.Duration
	history time.Duration
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTitle sets the page's title (default "statepipe").
func WithTitle(title string) Option {
	return optionFunc(func(c *config) { c.title = title })
}

// WithRefresh sets how often the page asks for new numbers (default 1s):
// also the least time between two reads of the Pipelines' Stats, however
// many pages are open. Values below 100ms are taken as 100ms.
func WithRefresh(d time.Duration) Option {
	return optionFunc(func(c *config) { c.refresh = max(d, 100*time.Millisecond) })
}

// WithHistory sets the span of the throughput chart (default 5 minutes).
// Values below 10s are taken as 10s.
func WithHistory(d time.Duration) Option {
	return optionFunc(func(c *config) { c.history = max(d, 10*time.Second) })
}
