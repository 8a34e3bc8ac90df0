package proctest_test

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"testing"

	"github.com/statepipe/statepipe/connect/internal/proctest"
)

const env = "STATEPIPE_PROCTEST_WORKER"

func TestMain(m *testing.M) {
	proctest.Main(env, func(spec string) int {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		fmt.Println("ready")
		<-stop
		fmt.Println("bye from", spec)
		return 0
	})
	os.Exit(m.Run())
}

func TestWorkersStopWithWhatTheyPrintedAndDieWhenKilled(t *testing.T) {
	ps := proctest.Start(t, env, []string{"a", "b"}, []string{"one", "two"})
	ps[0].Kill(t)
	if got := ps[1].Stop(t); !slices.Equal(got, []string{"bye from two"}) {
		t.Fatalf("Stop = %q, want the worker's last line", got)
	}
}
