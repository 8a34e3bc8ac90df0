package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current templates")

// TestNewGolden checks every generated file against testdata/new/*.golden.
func TestNewGolden(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "orders")
	e, out, errb := testEnv()
	if code := run([]string{"new", "orders", "--dir", dir}, e); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	want := []string{"bulk.go", "go.mod", "item.go", "machine.go", "machine_test.go", "main.go"}
	if !slices.Equal(names, want) {
		t.Errorf("generated %v, want %v", names, want)
	}
	for _, name := range names {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join("testdata", "new", name+".golden")
		if *update {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		wantb, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test -run TestNewGolden -update)", err)
		}
		if !bytes.Equal(got, wantb) {
			t.Errorf("%s differs from %s (run go test -run TestNewGolden -update if intended)", name, golden)
		}
	}
	if !strings.Contains(out.String(), "cd "+dir+"\n  go mod tidy\n  go run .") {
		t.Errorf("next steps:\n%s", out)
	}
}

func TestNewInsideModule(t *testing.T) {
	mod := t.TempDir()
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/app\n\ngo 1.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mod, "cmd", "sync_users")
	e, out, errb := testEnv()
	if code := run([]string{"new", "--dir", dir, "sync_users"}, e); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); !os.IsNotExist(err) {
		t.Errorf("go.mod written inside module example.com/app (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "machine.go")); err != nil {
		t.Error(err)
	}
	if !strings.Contains(out.String(), "module example.com/app") || !strings.Contains(out.String(), "go run "+dir) {
		t.Errorf("next steps:\n%s", out)
	}
}

func TestNewRefuses(t *testing.T) {
	existing := t.TempDir()
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"new"}, exitUsage, "new needs a NAME"},
		{[]string{"new", "a", "b"}, exitUsage, "new takes one NAME, got 2 arguments"},
		{[]string{"new", "9lives"}, exitUsage, `"9lives" is not a Go identifier`},
		{[]string{"new", "my-app"}, exitUsage, `"my-app" is not a Go identifier`},
		{[]string{"new", "type"}, exitUsage, `"type" is a Go keyword`},
		{[]string{"new", "größe"}, exitUsage, "use ASCII letters"},
		{[]string{"new", "main"}, exitUsage, `"main" cannot be a module path`},
		{[]string{"new", "app", "--dir", existing}, exitFailed, existing + " already exists"},
		{[]string{"new", "app", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			e, _, errb := testEnv()
			if code := run(tt.args, e); code != tt.code {
				t.Errorf("exit %d, want %d: %s", code, tt.code, errb)
			}
			if !strings.Contains(errb.String(), tt.msg) {
				t.Errorf("stderr lacks %q: %s", tt.msg, errb)
			}
		})
	}
	if entries, _ := os.ReadDir(existing); len(entries) != 0 {
		t.Errorf("wrote into the existing directory: %v", entries)
	}
}

// TestNewBuildsAndRuns builds, runs and tests the generated program
// against this checkout of statepipe, offline.
func TestNewBuildsAndRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped in -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "orders")
	e, _, errb := testEnv()
	if code := run([]string{"new", "orders", "--dir", dir}, e); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	goCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gobin, args...)
		cmd.Dir = dir
		// Offline: statepipe comes from this checkout and needs nothing
		// else; the workspace of this repository must not apply.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOPROXY=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd("mod", "edit", "-require=github.com/statepipe/statepipe@v0.0.0", "-replace=github.com/statepipe/statepipe="+repo)
	goCmd("vet", ".")
	out := goCmd("run", ".")
	for _, want := range []string{
		"eu: 103 stored, 17 failed\n",
		"us: 69 stored, 11 failed\n",
		"orders: 172 items stored in ",
		"; 172 completed, 28 failed\n",
		"stage Store ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("go run output lacks %q:\n%s", want, out)
		}
	}
	if out := goCmd("test", "-count=1", "."); !strings.HasPrefix(out, "ok") {
		t.Errorf("go test:\n%s", out)
	}
}
