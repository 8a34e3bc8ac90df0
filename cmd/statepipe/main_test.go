package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCommandLine(t *testing.T) {
	root, _ := writeTree(t, 0)
	tmp := t.TempDir()
	notDB := filepath.Join(tmp, "notes.txt")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database\n", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(tmp, "foreign.db")
	db, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE customers (id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	okDB := filepath.Join(tmp, "ok.db")

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a substring of stderr
		stdout string // a substring of stdout
	}{
		{"no command", nil, exitUsage, "Usage:", ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`, ""},
		{"help", []string{"help"}, exitOK, "", "statepipe demo [flags]"},
		{"help demo", []string{"help", "demo"}, exitOK, "", "--baseline"},
		{"demo --help", []string{"demo", "--help"}, exitOK, "", "--linger D"},
		{"demo -h", []string{"demo", "-h"}, exitOK, "", "--pipelines N"},
		{"new --help", []string{"new", "--help"}, exitOK, "", "statepipe new NAME [--dir D]"},
		{"unknown flag", []string{"demo", "--bogus"}, exitUsage, "flag provided but not defined: -bogus", ""},
		{"not a number", []string{"demo", "--pipelines", "two"}, exitUsage, `invalid value "two" for flag -pipelines`, ""},
		{"unknown log", []string{"demo", "--workers", "2", "--via", "kafkaa"}, exitUsage, `--via must be nats or kafka, got "kafkaa"`, ""},
		{"kafka in one process", []string{"demo", "--via", "kafka"}, exitUsage, "--via kafka needs --workers", ""},
		{"negative pipelines", []string{"demo", "--pipelines", "-1"}, exitUsage, "--pipelines must be at least 1, or 0 (the default) to autoscale", ""},
		{"zero batch", []string{"demo", "--batch", "0"}, exitUsage, "--batch must be between 1 and 100000", ""},
		{"huge batch", []string{"demo", "--batch", "1000000"}, exitUsage, "--batch must be between 1 and 100000", ""},
		{"negative linger", []string{"demo", "--linger", "-1ms"}, exitUsage, "--linger must be between 0 and 1m0s", ""},
		{"long linger", []string{"demo", "--linger", "2m"}, exitUsage, "--linger must be between 0 and 1m0s", ""},
		{"bad duration", []string{"demo", "--linger", "5"}, exitUsage, `invalid value "5" for flag -linger`, ""},
		{"argument", []string{"demo", "extra"}, exitUsage, `demo takes no arguments, got "extra"`, ""},
		{"empty db", []string{"demo", "--db", ""}, exitUsage, "--db must name a file", ""},
		{"usage hint", []string{"demo", "--batch", "0"}, exitUsage, "Run 'statepipe demo --help' for usage.", ""},
		{"missing src", []string{"demo", "--src", filepath.Join(tmp, "nope"), "--db", okDB}, exitFailed, "cannot read --src", ""},
		{"src is a file", []string{"demo", "--src", notDB, "--db", okDB}, exitFailed, "not a directory", ""},
		{"empty src", []string{"demo", "--src", t.TempDir(), "--db", okDB}, exitFailed, "holds no files", ""},
		{"db in missing dir", []string{"demo", "--src", root, "--db", filepath.Join(tmp, "no", "such", "x.db")}, exitFailed, "does not exist", ""},
		{"db is a directory", []string{"demo", "--src", root, "--db", tmp}, exitFailed, "it is a directory", ""},
		{"db not a database", []string{"demo", "--src", root, "--db", notDB}, exitFailed, "cannot open database", ""},
		{"db of another program", []string{"demo", "--src", root, "--db", foreign}, exitFailed, `has a table "customers"`, ""},
		{"db with ?", []string{"demo", "--src", root, "--db", filepath.Join(tmp, "a?b.db")}, exitFailed, "must not contain '?'", ""},
		{"ok", []string{"demo", "--src", root, "--db", okDB}, exitOK, "", "committed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, out, errb := testEnv()
			code := run(tt.args, e)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tt.code, errb)
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errb)
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out)
			}
		})
	}

	// A refused database is left as it was.
	b, err := os.ReadFile(notDB)
	if err != nil || !strings.HasPrefix(string(b), "not a database") {
		t.Errorf("%s was changed: %v", notDB, err)
	}
	db, err = sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'files'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%s was changed: files table %d, %v", foreign, n, err)
	}
}

// TestInterruptContexts sends this process SIGINT twice: the first ends
// stop only, the second abort.
func TestInterruptContexts(t *testing.T) {
	stop, abort, release := interruptContexts()
	defer release()
	wait := func(ctx context.Context, what string) {
		t.Helper()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not end", what)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	wait(stop, "stop")
	time.Sleep(20 * time.Millisecond)
	if abort.Err() != nil {
		t.Fatal("the first signal ended abort")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	wait(abort, "abort")
}
