package statepipe

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
)

// An Option configures [New].
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is the validated configuration of a Pipelines. Zero fields mean
// "not set"; defaults are filled by validate.
type config struct {
	pipelines   int
	workers     int
	maxInFlight int
	ordered     bool
	dag         bool
	middleware  any // []Middleware[T], checked against T in validate
	logger      *slog.Logger
	observer    Observer
	keys        any // func(*Pipelines[T]) keyer[T], checked against T in validate
	keyFailFast bool
	backoff     *Backoff
	problems    []string // recorded by options, reported by validate
}

// WithPipelines sets how many pipelines run in parallel: each pipeline has
// one worker per stage, so P pipelines of C stages run P*C workers.
// The default is runtime.GOMAXPROCS(0). n must be at least 1.
func WithPipelines(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.problems = append(c.problems, "WithPipelines: n must be at least 1")
		}
		c.pipelines = n
	})
}

// WithWorkers sets the number of worker goroutines directly, instead of
// pipelines times stages. It cannot be combined with [WithPipelines].
// n must be at least 1.
func WithWorkers(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.problems = append(c.problems, "WithWorkers: n must be at least 1")
		}
		c.workers = n
	})
}

// WithOrdered makes every group ordered, as if created with [Ordered]:
// results come out of Out in submission order.
func WithOrdered() Option {
	return optionFunc(func(c *config) { c.ordered = true })
}

// WithDAG declares the machine acyclic: a request that reaches the same
// stage twice fails with a [*CycleError] naming its path. Off by default,
// since loops (retry a stage, poll until ready) are legitimate.
func WithDAG() Option {
	return optionFunc(func(c *config) { c.dag = true })
}

// WithMaxInFlight bounds memory: at most n requests are inside the machine
// (admitted by Submit and not yet handed to their group's output: queued,
// running or parked), and each group holds at most its own bound (default
// n, see [MaxInFlight]) admitted and not yet received from Out. Submit
// blocks while a bound is reached. Memory is spent on what is held, not
// reserved for the bound.
//
// Parked requests count as inside, so a Batcher needs room for its
// MaxItems x MaxFlushes requests to run all its flushes full at once. The
// default is 1,024 plus that much for every Batcher of the machine that
// New finds (those held in its fields, as they usually are): batching is
// never capped by the default. An explicit n smaller than one of those
// batchers' MaxItems x MaxFlushes fails New; for a batcher New cannot
// find, it is logged when the batcher is first used and reported in its
// BatchStats.Warning. n must be between 1 and 1<<20.
//
// Results waiting in output buffers are bounded per group, not across
// groups: a global bound on them would let one group whose consumer stopped
// reading block every other group's Submit.
func WithMaxInFlight(n int) Option {
	return optionFunc(func(c *config) {
		switch {
		case n < 1:
			c.problems = append(c.problems, "WithMaxInFlight: n must be at least 1")
		case n > maxInFlightLimit:
			c.problems = append(c.problems, fmt.Sprintf("WithMaxInFlight: n must be at most %d", maxInFlightLimit))
		}
		c.maxInFlight = n
	})
}

const (
	defaultMaxInFlight = 1024
	// maxInFlightLimit keeps the input queue, allocated at the bound
	// (8 bytes a request), reasonable.
	maxInFlightLimit = 1 << 20
)

// WithLogger sets the logger for lifecycle events: start, close, and
// recovered panics. Nothing is logged per request. The default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l == nil {
			c.problems = append(c.problems, "WithLogger: nil logger")
		}
		c.logger = l
	})
}

// Middleware wraps every stage call: it receives the stage's name, the
// request and the stage, and must return what the stage (or itself) made of
// the request. Typical uses are timing, tracing and logging per stage.
//
// A middleware is called on the worker's goroutine, once per stage run; it
// must not keep next after it returns. A panic in it is recovered like a
// panic in the stage.
type Middleware[T any] func(stage string, r Request[T], next Stage[T]) Request[T]

// WithMiddleware wraps every stage call in mws, the first outermost. T must
// be the machine's data type, or New fails with [ErrInvalidOption]. Calling
// it more than once appends.
func WithMiddleware[T any](mws ...Middleware[T]) Option {
	return optionFunc(func(c *config) {
		prev, ok := c.middleware.([]Middleware[T])
		if c.middleware != nil && !ok {
			c.problems = append(c.problems, "WithMiddleware: middleware for different data types")
			return
		}
		for _, mw := range mws {
			if mw == nil {
				c.problems = append(c.problems, "WithMiddleware: nil middleware")
				return
			}
		}
		c.middleware = append(prev, mws...)
	})
}

// validate fills defaults and reports every problem found, in one error:
// of the options, and of the machine's batchers.
func validate[T any](sm StateMachine[T], stages int, opts []Option) (config, []Middleware[T], error) {
	var c config
	for _, o := range opts {
		if o == nil {
			c.problems = append(c.problems, "nil Option")
			continue
		}
		o.apply(&c)
	}
	if sm == nil {
		c.problems = append(c.problems, "nil state machine")
	} else if c.maxInFlight >= 0 && c.maxInFlight <= maxInFlightLimit {
		c.checkBatchers(discoverBatchers[T](sm))
	}
	if c.pipelines != 0 && c.workers != 0 {
		c.problems = append(c.problems, "WithPipelines and WithWorkers both set; choose one")
	}
	var mws []Middleware[T]
	if c.middleware != nil {
		var ok bool
		if mws, ok = c.middleware.([]Middleware[T]); !ok {
			c.problems = append(c.problems, "WithMiddleware: middleware is for a different data type than the machine")
		}
	}
	if _, ok := c.keys.(func(*Pipelines[T]) keyer[T]); c.keys != nil && !ok {
		c.problems = append(c.problems, "WithKey: key function for a different data type than the machine")
	}
	if c.keyFailFast && c.keys == nil {
		c.problems = append(c.problems, "WithKeyFailFast without WithKey")
	}
	if len(c.problems) > 0 {
		return c, nil, invalid("%s", strings.Join(c.problems, "; "))
	}
	if c.backoff == nil {
		c.backoff = &defaultBackoff
	}
	if c.pipelines == 0 {
		c.pipelines = runtime.GOMAXPROCS(0)
	}
	if c.workers == 0 {
		c.workers = c.pipelines * stages
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, mws, nil
}

// A GroupOption configures [Pipelines.NewGroup].
type GroupOption interface {
	applyGroup(groupConfig) groupConfig // by value: the config of a new group stays on the stack
}

type groupOptionFunc func(groupConfig) groupConfig

func (f groupOptionFunc) applyGroup(c groupConfig) groupConfig { return f(c) }

type groupConfig struct {
	ordered     bool
	maxInFlight int
}

// Ordered makes a group release its results in submission order. A slow
// request holds back the ones submitted after it (head-of-line blocking).
func Ordered() GroupOption {
	return groupOptionFunc(func(c groupConfig) groupConfig { c.ordered = true; return c })
}

// MaxInFlight bounds the group's requests admitted by Submit and not yet
// received from Out; Submit blocks while it is reached. The group's output
// buffer has this capacity, so workers never wait for its consumer. The
// default is the Pipelines' [WithMaxInFlight]; values below 1 or above it
// are clamped to that range.
func MaxInFlight(n int) GroupOption {
	return groupOptionFunc(func(c groupConfig) groupConfig { c.maxInFlight = n; return c })
}
