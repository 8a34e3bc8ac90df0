package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The demo through Kafka writes one row per file walked, with and without
// a worker killed mid-run: the workers are exactly once, so the killed
// worker's open transaction leaves no row behind that another worker
// writes again (the files table's primary key would refuse it).
func TestDemoViaKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, kill := range []bool{false, true} {
		name := "all workers"
		if kill {
			name = "kill a worker"
		}
		t.Run(name, func(t *testing.T) {
			root, paths := writeTree(t, 600)
			db := filepath.Join(t.TempDir(), "kafka.db")
			args := []string{"--workers", "3", "--via", "kafka", "--src", root, "--db", db, "--batch", "40", "--linger", "2ms"}
			if kill {
				args = append(args, "--kill-worker")
			}
			cfg, err := parseDemoFlags(args, nil)
			if err != nil {
				t.Fatal(err)
			}
			e, out, errb := testEnv()
			if err := runDemo(e, cfg); err != nil { // through --via's dispatch
				t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out, errb)
			}
			d := openDB(t, db)
			if rows := checkConsistent(t, d); rows != int64(len(paths)) {
				t.Errorf("%d rows for %d files", rows, len(paths))
			}
			if st := queryStrings(t, d, `SELECT status FROM runs`); !slices.Equal(st, []string{"complete"}) {
				t.Errorf("runs = %v", st)
			}
			s := out.String()
			for _, want := range []string{"--workers 3 --via kafka", "worker 1", "worker 3", "collector", "0 dead letters"} {
				if !strings.Contains(s, want) {
					t.Errorf("the summary lacks %q:\n%s", want, s)
				}
			}
			if kill && !strings.Contains(s, "killed") {
				t.Errorf("no worker was killed:\n%s", s)
			}
			t.Logf("%s\nstderr:\n%s", s, errb)
		})
	}
}
