package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The distributed demo starts its workers by running this program again
// (os.Executable) with the hidden worker command; in a test, that program
// is the test binary, which runs the command instead of the tests.
func TestMain(m *testing.M) {
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

func TestDemoWorkersFlags(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"demo", "--workers", "-1"}, "--workers must be between 1 and 64"},
		{[]string{"demo", "--workers", "65"}, "--workers must be between 1 and 64"},
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
