package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testEnv returns an env whose output goes to buffers and which is never
// interrupted.
func testEnv() (env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return env{
		stdout: &out, stderr: &errb,
		stop: context.Background(), abort: context.Background(),
	}, &out, &errb
}

// writeTree makes a small source tree: a few hand-written files that
// cover every route through the machine, and n generated ones spread over
// several top-level directories. It returns the slash paths of its files.
func writeTree(t *testing.T, n int) (root string, paths []string) {
	t.Helper()
	root = t.TempDir()
	files := map[string]string{
		"all.bash":                 "#!/bin/sh\necho all\n",
		"go.mod":                   "module std\n",
		"alpha/alpha.go":           "package alpha\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\ntype T int\n\nfunc A() { fmt.Fprintln(os.Stdout) }\n\nfunc (T) M() {}\n",
		"alpha/alpha_test.go":      "package alpha_test\n\nimport \"testing\"\n\nfunc TestA(t *testing.T) {}\n",
		"alpha/doc.txt":            "no newline at the end",
		"beta/broken.go":           "package beta\n\nfunc {\n",
		"beta/empty":               "",
		"beta/data.bin":            "\x00\x01\x02\xff",
		"gamma/sub/deep/gamma.go":  "package deep\n\nfunc X() {}\nfunc Y() {}\nfunc Z() {}\n",
		"gamma/sub/testdata/t.go":  "package t\n\nfunc T() {}\n",
		"gamma/sub/deep/README.md": "# deep\n\ntext\n",
	}
	for i := range n {
		dir := []string{"alpha", "beta", "gamma/sub", "delta/x/y"}[i%4]
		name := fmt.Sprintf("%s/gen%04d.go", dir, i)
		if i%3 == 0 {
			name = fmt.Sprintf("%s/gen%04d.txt", dir, i)
		}
		files[name] = fmt.Sprintf("package gen\n\nfunc F%d() {}\n", i)
	}
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// A symlink is not a file of the tree: it is not walked.
	if err := os.Symlink("alpha.go", filepath.Join(root, "alpha", "link.go")); err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	return root, paths
}

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n.Int64
}

// checkConsistent checks what a reader of the database relies on, whatever
// stopped the run: SQLite's integrity, and whole batches only (each flush
// wrote its files and its batches row in one transaction).
func checkConsistent(t *testing.T, db *sql.DB) (rows int64) {
	t.Helper()
	if got := queryStrings(t, db, `PRAGMA integrity_check`); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("integrity_check: %v", got)
	}
	rows = queryInt(t, db, `SELECT count(*) FROM files`)
	if sum := queryInt(t, db, `SELECT coalesce(sum(rows), 0) FROM batches`); sum != rows {
		t.Errorf("files holds %d rows, batches account for %d", rows, sum)
	}
	partial := queryStrings(t, db, `SELECT b.id FROM batches b
		WHERE b.rows != (SELECT count(*) FROM files f WHERE f.batch = b.id)`)
	if len(partial) > 0 {
		t.Errorf("batches written partly: %v", partial)
	}
	if empty := queryInt(t, db, `SELECT count(*) FROM batches WHERE rows = 0`); empty > 0 {
		t.Errorf("%d empty batches recorded", empty)
	}
	if orphans := queryInt(t, db, `SELECT count(*) FROM files WHERE batch NOT IN (SELECT id FROM batches)`); orphans > 0 {
		t.Errorf("%d rows of no recorded batch", orphans)
	}
	return rows
}

func TestDemoOneRowPerFile(t *testing.T) {
	root, paths := writeTree(t, 300)
	db := filepath.Join(t.TempDir(), "demo.db")
	e, out, errb := testEnv()
	code := run([]string{"demo", "--src", root, "--db", db, "--batch", "40", "--linger", "2ms"}, e)
	if code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errb)
	}

	d := openDB(t, db)
	got := queryStrings(t, d, `SELECT path FROM files ORDER BY path`)
	if !slices.Equal(got, paths) {
		t.Errorf("paths in the database differ from the files walked:\n got %d %v\nwant %d %v",
			len(got), head(got), len(paths), head(paths))
	}
	if rows := checkConsistent(t, d); rows != int64(len(paths)) {
		t.Errorf("%d rows for %d files", rows, len(paths))
	}
	if st := queryStrings(t, d, `SELECT status || ' ' || walked || ' ' || rows FROM runs`); !slices.Equal(st, []string{fmt.Sprintf("complete %d %d", len(paths), len(paths))}) {
		t.Errorf("runs = %v", st)
	}

	// Each route through the machine left what it should.
	type row struct {
		kind, pkg            string
		size, lines, imports int64
		funcs                int64
		parseErr, sha        string
	}
	read := func(p string) row {
		var r row
		var pkg, pe, sha sql.NullString
		var imports, funcs sql.NullInt64
		err := d.QueryRow(`SELECT kind, package, size, lines, imports, funcs, parse_error, sha256 FROM files WHERE path = ?`, p).
			Scan(&r.kind, &pkg, &r.size, &r.lines, &imports, &funcs, &pe, &sha)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		r.pkg, r.parseErr, r.sha, r.imports, r.funcs = pkg.String, pe.String, sha.String, imports.Int64, funcs.Int64
		return r
	}
	if r := read("alpha/alpha.go"); r.kind != "go" || r.pkg != "alpha" || r.imports != 2 || r.funcs != 2 || r.lines != 12 || r.parseErr != "" {
		t.Errorf("alpha/alpha.go: %+v", r)
	}
	if r := read("beta/broken.go"); r.kind != "go" || r.pkg != "beta" || r.parseErr == "" {
		t.Errorf("beta/broken.go: want package beta and a parse error, got %+v", r)
	}
	if r := read("alpha/doc.txt"); r.kind != "other" || r.lines != 1 || r.size != 21 || r.pkg != "" {
		t.Errorf("alpha/doc.txt: %+v", r)
	}
	// sha256("") is well known.
	if r := read("beta/empty"); r.size != 0 || r.lines != 0 || r.sha != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("beta/empty: %+v", r)
	}
	if tops := queryStrings(t, d, `SELECT DISTINCT top FROM files ORDER BY top`); !slices.Equal(tops, []string{".", "alpha", "beta", "delta", "gamma"}) {
		t.Errorf("tops = %v", tops)
	}

	// The summary tells the story and shows the query's result.
	s := out.String()
	for _, want := range []string{
		fmt.Sprintf("%d walked", len(paths)),
		fmt.Sprintf("%d committed", len(paths)),
		"in 5 groups",
		"stages (p.Stats())",
		"ParseGo", "ReadOther", "Committed",
		`batcher "sqlite"`,
		"flushes ",
		"stages discovered (p.Stages()): Start, Committed, Hash, ParseGo, ReadOther, Store",
		"the stage graph as run",
		"Store -->|", "sqlite -->|", "Committed -->|",
		"the packages with the most functions",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	// gamma/sub/deep has 3 functions, the most of the hand-written ones;
	// testdata is left out of the query.
	if !regexp.MustCompile(`(?m)^\s+gamma/sub/deep\s+deep\s+1\s+3\s+5$`).MatchString(s) {
		t.Errorf("the query's result lacks gamma/sub/deep:\n%s", s)
	}
	if strings.Contains(s, "testdata") && regexp.MustCompile(`(?m)^\s+gamma/sub/testdata`).MatchString(s) {
		t.Errorf("testdata is in the query's result:\n%s", s)
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func TestDemoRerunReplaces(t *testing.T) {
	root, paths := writeTree(t, 20)
	db := filepath.Join(t.TempDir(), "demo.db")
	for i, args := range [][]string{
		{"demo", "--src", root, "--db", db},
		{"demo", "--src", root, "--db", db, "--ordered", "--pipelines", "1", "--batch", "3", "--linger", "0"},
	} {
		e, _, errb := testEnv()
		if code := run(args, e); code != exitOK {
			t.Fatalf("run %d: exit %d: %s", i, code, errb)
		}
	}
	d := openDB(t, db)
	if rows := checkConsistent(t, d); rows != int64(len(paths)) {
		t.Errorf("after two runs: %d rows for %d files", rows, len(paths))
	}
	if n := queryInt(t, d, `SELECT count(*) FROM runs`); n != 1 {
		t.Errorf("%d runs recorded, want the last one only", n)
	}
	// The write-ahead log was folded back: one self-contained file.
	if _, err := os.Stat(db + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s-wal left behind (%v)", db, err)
	}
}

// Regression: two demos on one --db both failed, with "UNIQUE constraint
// failed" and summaries whose counts exceeded the files; the second is now
// refused at once and the first is not disturbed.
func TestDemoSecondRunOnOneDatabaseIsRefused(t *testing.T) {
	root, paths := writeTree(t, 400)
	db := filepath.Join(t.TempDir(), "demo.db")
	cfg, err := parseDemoFlags([]string{"--src", root, "--db", db, "--batch", "50"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var second struct {
		code           int
		stdout, stderr string
	}
	cfg.afterFlush = func(id int64) {
		if id == 2 { // the first run is under way: a second one starts
			e, out, errb := testEnv()
			second.code = run([]string{"demo", "--src", root, "--db", db}, e)
			second.stdout, second.stderr = out.String(), errb.String()
		}
	}
	e, out, errb := testEnv()
	if err := runDemo(e, cfg); err != nil {
		t.Fatalf("the first run: %v\n%s", err, errb)
	}
	if second.code != exitFailed || !strings.Contains(second.stderr, "is in use by another statepipe demo") || second.stdout != "" {
		t.Errorf("the second run: exit %d, stdout %q, stderr %q", second.code, second.stdout, second.stderr)
	}
	if rows := checkConsistent(t, openDB(t, db)); rows != int64(len(paths)) {
		t.Errorf("%d rows for %d files", rows, len(paths))
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d committed in", len(paths))) {
		t.Errorf("the first run's summary:\n%s", out)
	}
	// Once the first has ended, the database is free again.
	e, _, errb = testEnv()
	if code := run([]string{"demo", "--src", root, "--db", db}, e); code != exitOK {
		t.Errorf("a run after the first: exit %d: %s", code, errb)
	}
}

func TestDemoBaseline(t *testing.T) {
	root, paths := writeTree(t, 40)
	db := filepath.Join(t.TempDir(), "demo.db")
	e, out, errb := testEnv()
	if code := run([]string{"demo", "--src", root, "--db", db, "--baseline"}, e); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	base := filepath.Join(filepath.Dir(db), "demo-baseline.db")
	for _, p := range []string{db, base} {
		got := queryStrings(t, openDB(t, p), `SELECT path FROM files ORDER BY path`)
		if !slices.Equal(got, paths) {
			t.Errorf("%s: %d rows for %d files", p, len(got), len(paths))
		}
	}
	// Both ways compute the same rows.
	q := `SELECT path || kind || size || lines || coalesce(package, '') || coalesce(funcs, '') || coalesce(sha256, '') FROM files ORDER BY path`
	if a, b := queryStrings(t, openDB(t, db), q), queryStrings(t, openDB(t, base), q); !slices.Equal(a, b) {
		t.Errorf("the baseline's rows differ from the demo's")
	}
	if !regexp.MustCompile(`speed-up: \d+\.\dx`).MatchString(out.String()) {
		t.Errorf("no speed-up in:\n%s", out)
	}
}

// interrupt runs the demo on a generated tree and ends stop (and abort,
// if hard) once three batches are committed. The tree is larger than what
// can be committed by then: three batches and the 1,024 files in flight.
func interrupt(t *testing.T, hard bool) (res error, db string, out string, files int) {
	root, paths := writeTree(t, 1600)
	db = filepath.Join(t.TempDir(), "demo.db")
	cfg, err := parseDemoFlags([]string{"--src", root, "--db", db, "--batch", "25", "--linger", "1ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, outb, _ := testEnv()
	stop, cancelStop := context.WithCancel(context.Background())
	abort, cancelAbort := context.WithCancel(context.Background())
	defer cancelStop()
	defer cancelAbort()
	e.stop, e.abort = stop, abort
	var once sync.Once
	cfg.afterFlush = func(id int64) {
		if id == 3 {
			once.Do(func() {
				cancelStop()
				if hard {
					cancelAbort()
				}
			})
		}
	}
	err = runDemo(e, cfg)
	return err, db, outb.String(), len(paths)
}

func TestDemoInterruptCommitsInFlight(t *testing.T) {
	err, db, out, files := interrupt(t, false)
	if !errors.Is(err, errInterrupted) {
		t.Fatalf("err = %v, want errInterrupted", err)
	}
	d := openDB(t, db)
	rows := checkConsistent(t, d)
	t.Logf("%d of %d files committed", rows, files)
	if rows == 0 || rows >= int64(files) {
		t.Errorf("%d rows of %d files: want an interrupted run", rows, files)
	}
	if st := queryStrings(t, d, `SELECT status FROM runs`); !slices.Equal(st, []string{"interrupted"}) {
		t.Errorf("run status %v", st)
	}
	// A first Ctrl-C lets everything submitted finish: nothing failed.
	if !strings.Contains(out, fmt.Sprintf("%d committed in", rows)) || !strings.Contains(out, "; 0 files failed") {
		t.Errorf("summary does not match the database (%d rows):\n%s", rows, out)
	}
	if !strings.Contains(out, "INTERRUPTED") {
		t.Errorf("summary does not say it was interrupted:\n%s", out)
	}
}

func TestDemoAbortKeepsWholeBatches(t *testing.T) {
	err, db, out, files := interrupt(t, true)
	if !errors.Is(err, errInterrupted) {
		t.Fatalf("err = %v, want errInterrupted", err)
	}
	rows := checkConsistent(t, openDB(t, db))
	t.Logf("%d of %d files committed", rows, files)
	if rows == 0 || rows >= int64(files) {
		t.Errorf("%d rows of %d files: want an interrupted run", rows, files)
	}
	if !strings.Contains(out, fmt.Sprintf("%d committed in", rows)) {
		t.Errorf("summary does not match the database (%d rows):\n%s", rows, out)
	}
}

func TestDemoInterruptedBeforeStartExits130(t *testing.T) {
	root, _ := writeTree(t, 10)
	db := filepath.Join(t.TempDir(), "demo.db")
	e, _, errb := testEnv()
	stop, cancel := context.WithCancel(context.Background())
	cancel()
	e.stop = stop
	if code := run([]string{"demo", "--src", root, "--db", db}, e); code != exitInterrupted {
		t.Fatalf("exit %d, want %d: %s", code, exitInterrupted, errb)
	}
	if !strings.Contains(errb.String(), "interrupted: 0 of") {
		t.Errorf("stderr: %s", errb)
	}
	d := openDB(t, db)
	checkConsistent(t, d)
	if st := queryStrings(t, d, `SELECT status FROM runs`); !slices.Equal(st, []string{"interrupted"}) {
		t.Errorf("run status %v", st)
	}
}

// progressLine is a plain progress line; no carriage return, no escape.
var progressLine = regexp.MustCompile(`^(demo|baseline): \d+/\d+ files \(\d+%\), \d+ files/s, (ETA (\?|` + durationPat + `)|in ` + durationPat + `)$`)

// durationPat matches what time.Duration prints: 0s, 35ms, 1.5s, 1m2s, 1h0m0s.
const durationPat = `(?:[0-9.]+(?:h|ms|µs|ns|m|s))+`

func TestDemoPlainProgressWhenNotATerminal(t *testing.T) {
	root, paths := writeTree(t, 600)
	cfg, err := parseDemoFlags([]string{"--src", root, "--db", filepath.Join(t.TempDir(), "d.db"), "--baseline"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.tick = time.Millisecond
	e, _, errb := testEnv()
	if err := runDemo(e, cfg); err != nil {
		t.Fatal(err)
	}
	s := errb.String()
	if strings.ContainsAny(s, "\r\x1b") {
		t.Fatalf("progress not plain: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for _, l := range lines {
		if !progressLine.MatchString(l) {
			t.Errorf("not a progress line: %q", l)
		}
	}
	final := fmt.Sprintf("%d/%d files (100%%)", len(paths), len(paths))
	for _, label := range []string{"demo: ", "baseline: "} {
		var last string
		for _, l := range lines {
			if strings.HasPrefix(l, label) {
				last = l
			}
		}
		if !strings.Contains(last, final) || !strings.Contains(last, " in ") {
			t.Errorf("last %sline %q: want %q and the time taken", label, last, final)
		}
	}
}
