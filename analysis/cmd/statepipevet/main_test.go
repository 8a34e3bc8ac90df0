package main_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// vetBin is statepipevet built once for the tests of this package.
var vetBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "statepipevet")
	if err != nil {
		panic(err)
	}
	vetBin = filepath.Join(dir, "statepipevet")
	code := 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", vetBin, ".").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs name in the analyzer's testdata module (which replaces statepipe
// with this repository) and returns its output and exit code.
func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	dir, err := filepath.Abs("../../statepipecheck/testdata")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute) // a hung go vet fails the test
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOPROXY=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), 0
}

var finding = regexp.MustCompile(`(?m)^\S+\.go:\d+:\d+: g\.Submit in a loop before g\.Out is read`)

func TestStandaloneAndVetToolReportFindingsAndFail(t *testing.T) {
	bin := vetBin
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		{"standalone", []string{bin, "./submitloop"}},
		{"vettool", []string{"go", "vet", "-vettool=" + bin, "./submitloop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := run(t, tc.cmd[0], tc.cmd[1:]...)
			if code == 0 {
				t.Fatalf("exit code 0 with findings; output:\n%s", out)
			}
			if n := len(finding.FindAllString(out, -1)); n != 2 {
				t.Fatalf("want the 2 findings as file:line:col: message, got %d in:\n%s", n, out)
			}
		})
	}
}

func TestStandaloneAndVetToolPassCleanCode(t *testing.T) {
	bin := vetBin
	for _, cmd := range [][]string{{bin, "./clean"}, {"go", "vet", "-vettool=" + bin, "./clean"}} {
		out, code := run(t, cmd[0], cmd[1:]...)
		if code != 0 || strings.Contains(out, ".go:") {
			t.Errorf("%v: exit %d, output:\n%s", cmd, code, out)
		}
	}
}
