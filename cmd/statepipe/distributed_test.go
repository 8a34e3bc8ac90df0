package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// asCommand, set to 1 in the environment, makes the test binary the
// statepipe command.
const asCommand = "STATEPIPE_TEST_AS_COMMAND"

// The distributed demo starts its workers by running this program again
// (os.Executable) with the hidden worker command; in a test, that program
// is the test binary, which runs the command instead of the tests.
//
// Tests that need the command in a process of its own (under a terminal,
// or two at once) run the test binary with asCommand set.
func TestMain(m *testing.M) {
	if os.Getenv(asCommand) == "1" {
		os.Exit(command(os.Args[1:]))
	}
	if len(os.Args) > 1 && os.Args[1] == workerCommandName {
		ctx := context.Background()
		os.Exit(run(os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, stop: ctx, abort: ctx}))
	}
	os.Exit(m.Run())
}

// demo --workers writes the same rows as the single-process demo.
func TestDemoWorkers(t *testing.T) {
	root, paths := writeTree(t, 300)
	dir := t.TempDir()
	single, multi := filepath.Join(dir, "single.db"), filepath.Join(dir, "multi.db")
	e, _, errb := testEnv()
	if code := run([]string{"demo", "--src", root, "--db", single}, e); code != exitOK {
		t.Fatalf("demo: exit %d\n%s", code, errb)
	}
	e, out, errb := testEnv()
	if code := run([]string{"demo", "--workers", "2", "--src", root, "--db", multi, "--batch", "40", "--linger", "2ms"}, e); code != exitOK {
		t.Fatalf("demo --workers 2: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errb)
	}
	d := openDB(t, multi)
	if rows := checkConsistent(t, d); rows != int64(len(paths)) {
		t.Errorf("%d rows for %d files", rows, len(paths))
	}
	rowsOf := func(db string) []string {
		return queryStrings(t, openDB(t, db), `SELECT path || '|' || dir || '|' || top || '|' || kind || '|' || size || '|' || lines
			|| '|' || ifnull(package, '') || '|' || ifnull(imports, '') || '|' || ifnull(funcs, '') || '|' || ifnull(parse_error, '')
			|| '|' || ifnull(read_error, '') || '|' || ifnull(sha256, '') FROM files ORDER BY path`)
	}
	if a, b := rowsOf(single), rowsOf(multi); !slices.Equal(a, b) {
		t.Errorf("the rows differ from the single-process demo's:\n%v\n%v", head(a), head(b))
	}
	if st := queryStrings(t, d, `SELECT status FROM runs`); !slices.Equal(st, []string{"complete"}) {
		t.Errorf("runs = %v", st)
	}
	s := out.String()
	for _, want := range []string{"--workers 2", "worker 1", "worker 2", "collector", "0 dead letters"} {
		if !strings.Contains(s, want) {
			t.Errorf("the summary lacks %q:\n%s", want, s)
		}
	}
}

// Regression: demo --workers printed "100%" twice, with different rates:
// a periodic line once every file was in, and the final one after the
// workers had stopped.
func TestDemoWorkersOneFinalProgressLine(t *testing.T) {
	root, paths := writeTree(t, 200)
	cfg, err := parseDemoFlags([]string{"--workers", "3", "--src", root, "--db", filepath.Join(t.TempDir(), "w.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.tick = 5 * time.Millisecond
	e, out, errb := testEnv()
	if err := runDemo(e, cfg); err != nil {
		t.Fatalf("%v\n%s", err, errb)
	}
	var full []string
	for _, l := range strings.Split(errb.String(), "\n") {
		if strings.Contains(l, "(100%)") {
			full = append(full, l)
		}
	}
	want := fmt.Sprintf("demo: %d/%d files (100%%), ", len(paths), len(paths))
	if len(full) != 1 || !strings.HasPrefix(full[0], want) || !strings.Contains(full[0], " in ") {
		t.Fatalf("want one final 100%% line, got %q", full)
	}
	// Its rate is the summary's.
	rate := strings.TrimSuffix(strings.Fields(strings.TrimPrefix(full[0], want))[0], ",")
	if !strings.Contains(out.String(), ", "+rate+" files/s (publishing included)") {
		t.Errorf("progress says %s files/s, the summary:\n%s", rate, out)
	}
}

func TestDemoWorkersFlags(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		// Regression: the message gave 1 as the least while the default is 0.
		{[]string{"demo", "--workers", "-1"}, "--workers must be between 1 and 64, or 0 (the default) to run in this process; got -1"},
		{[]string{"demo", "--workers", "65"}, "--workers must be between 1 and 64, or 0 (the default) to run in this process; got 65"},
		{[]string{"demo", "--workers", "2", "--baseline"}, "cannot be combined"},
		{[]string{"demo", "--workers", "2", "--ordered"}, "cannot be combined"},
		{[]string{workerCommandName}, "is started by demo --workers"},
	}
	for _, tt := range tests {
		e, _, errb := testEnv()
		if code := run(tt.args, e); code != exitUsage || !strings.Contains(errb.String(), tt.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errb, exitUsage, tt.stderr)
		}
	}
	e, out, _ := testEnv()
	if code := run([]string{"demo", "--help"}, e); code != exitOK || !strings.Contains(out.String(), "--workers N") {
		t.Errorf("demo --help: exit %d, no --workers N in:\n%s", code, out)
	}
}
