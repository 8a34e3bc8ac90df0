package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrNoTopic is the error of [CheckTopics] (and so of [Source.Run]) when
// a topic does not exist.
var ErrNoTopic = errors.New("statepipe/kafka: no such topic")

// Topic describes a topic for [EnsureTopics].
type Topic struct {
	Name       string
	Partitions int32 // at least 1; a topic that exists must have exactly this many
	// Replicas is the replication factor; 0 or -1 takes the brokers'
	// default.
	Replicas int16
	// Configs are topic configs for a topic that is created, such as
	// "retention.ms" or "cleanup.policy"; nil values take the brokers'
	// defaults.
	Configs map[string]*string
}

// EnsureTopics creates the topics that do not exist, and checks that
// those that exist have the partitions asked for. It does not add
// partitions to a topic that has fewer: adding partitions moves keys to
// other partitions, which breaks per-key order, so it is left to a
// deliberate `kadm.Client.CreatePartitions` after a drain. The error
// names every topic that is wrong and why.
func EnsureTopics(ctx context.Context, adm *kadm.Client, topics ...Topic) error {
	var problems []string
	names := make([]string, 0, len(topics))
	for _, t := range topics {
		switch {
		case !validTopic(t.Name):
			problems = append(problems, fmt.Sprintf("%q is not a topic name", t.Name))
		case t.Partitions < 1:
			problems = append(problems, fmt.Sprintf("topic %s: %d partitions; want at least 1", t.Name, t.Partitions))
		}
		names = append(names, t.Name)
	}
	if len(problems) > 0 {
		return fmt.Errorf("statepipe/kafka: %s", strings.Join(problems, "; "))
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("statepipe/kafka: listing topics: %w", err)
	}
	var errs []error
	for _, t := range topics {
		d, ok := details[t.Name]
		switch {
		case ok && d.Err == nil:
			if n := int32(len(d.Partitions)); n != t.Partitions {
				errs = append(errs, fmt.Errorf("topic %s has %d partitions, want %d", t.Name, n, t.Partitions))
			}
			continue
		case ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			errs = append(errs, fmt.Errorf("topic %s: %w", t.Name, d.Err))
			continue
		}
		replicas := t.Replicas
		if replicas == 0 {
			replicas = -1
		}
		resp, err := adm.CreateTopic(ctx, t.Partitions, replicas, t.Configs, t.Name)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			msg := ""
			if resp.ErrMessage != "" {
				msg = " (" + resp.ErrMessage + ")"
			}
			errs = append(errs, fmt.Errorf("creating topic %s: %w%s", t.Name, err, msg))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("statepipe/kafka: %w", errors.Join(errs...))
	}
	return nil
}

// CheckTopics checks that the topics exist, and returns an error wrapping
// [ErrNoTopic] that names those that do not; or the error that kept it
// from knowing (brokers not reachable, not authorized).
func CheckTopics(ctx context.Context, adm *kadm.Client, names ...string) error {
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("statepipe/kafka: listing topics: %w", err)
	}
	var missing []string
	var errs []error
	for _, n := range names {
		d, ok := details[n]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, n)
		case d.Err != nil:
			errs = append(errs, fmt.Errorf("topic %s: %w", n, d.Err))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		missing = slices.Compact(missing)
		errs = append(errs, fmt.Errorf("%w: %s (create them first, e.g. with EnsureTopics)", ErrNoTopic, strings.Join(missing, ", ")))
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		if len(missing) > 0 {
			return errs[0]
		}
	}
	return fmt.Errorf("statepipe/kafka: %w", errors.Join(errs...))
}
