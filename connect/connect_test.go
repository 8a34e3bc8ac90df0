package connect_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
)

func TestJudgeSendsOnlyPermanentAndDecodeFailuresToDeadLetters(t *testing.T) {
	cause := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  error
		want connect.Verdict
		kind string
	}{
		{"success", nil, connect.Done, ""},
		{"plain error", cause, connect.Redeliver, ""},
		{"permanent", connect.Permanent(cause), connect.DeadLetter, connect.KindPermanent},
		{"wrapped permanent", fmt.Errorf("save: %w", connect.Permanent(cause)), connect.DeadLetter, connect.KindPermanent},
		{"decode", &connect.DecodeError{Err: cause}, connect.DeadLetter, connect.KindDecode},
		{"retries ran out", &statepipe.RetryError{Stage: "Save", Attempts: 3, Err: cause}, connect.Redeliver, ""},
		{"retries ran out on a permanent error", &statepipe.RetryError{Stage: "Save", Attempts: 3, Err: connect.Permanent(cause)}, connect.DeadLetter, connect.KindPermanent},
	} {
		v, kind := connect.Judge(tc.err)
		if v != tc.want || kind != tc.kind {
			t.Errorf("%s: Judge(%v) = %v, %q; want %v, %q", tc.name, tc.err, v, kind, tc.want, tc.kind)
		}
	}
}

func TestPermanentKeepsTheCause(t *testing.T) {
	cause := errors.New("boom")
	err := connect.Permanent(cause)
	if !errors.Is(err, cause) || !errors.Is(err, connect.ErrPermanent) {
		t.Fatalf("Permanent(cause) = %v: want it to match both cause and ErrPermanent", err)
	}
	if connect.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
}

func TestDecodeTurnsErrorsAndPanicsIntoDecodeErrors(t *testing.T) {
	var de *connect.DecodeError
	if _, err := connect.Decode(func([]byte) (int, error) { return 0, errors.New("bad") }, nil); !errors.As(err, &de) {
		t.Fatalf("error: got %v, want a *DecodeError", err)
	}
	if _, err := connect.Decode(func([]byte) (int, error) { panic("worse") }, nil); !errors.As(err, &de) {
		t.Fatalf("panic: got %v, want a *DecodeError", err)
	}
	if v, err := connect.Decode(func(b []byte) (int, error) { return len(b), nil }, []byte("abc")); v != 3 || err != nil {
		t.Fatalf("success: got %d, %v", v, err)
	}
}

func TestRetryExhaustedSeesThroughWrapping(t *testing.T) {
	err := fmt.Errorf("job 7: %w", &statepipe.RetryError{Stage: "Save", Attempts: 3, Err: errors.New("x")})
	if !connect.RetryExhausted(err) || connect.RetryExhausted(errors.New("x")) {
		t.Fatal("RetryExhausted does not tell a RetryError from another error")
	}
}

func TestExponentialDoublesUpToItsCap(t *testing.T) {
	b := connect.Exponential(100*time.Millisecond, time.Second)
	for _, tc := range []struct {
		delivered int
		want      time.Duration
	}{{0, 100 * time.Millisecond}, {1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {60, time.Second}} {
		if got := b(tc.delivered); got != tc.want {
			t.Errorf("Exponential(100ms, 1s)(%d) = %v, want %v", tc.delivered, got, tc.want)
		}
	}
}
