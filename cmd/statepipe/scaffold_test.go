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
	withSource(t, "/path/to/statepipe")
	dir := filepath.Join(t.TempDir(), "orders")
	out := runNew(t, "new", "orders", "--dir", dir)
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

// runNew runs the command line args, which must succeed, and returns its
// output.
func runNew(t *testing.T, args ...string) *bytes.Buffer {
	t.Helper()
	e, out, errb := testEnv()
	if code := run(args, e); code != exitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errb)
	}
	return out
}

// withSource makes the checkout this binary was built from dir ("": none)
// for the test.
func withSource(t *testing.T, dir string) {
	old := buildSource
	buildSource = func() string { return dir }
	t.Cleanup(func() { buildSource = old })
}

// repoRoot is the checkout these tests run in.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// fakeCheckout makes a copy of statepipe's core (its go.mod, its Go files
// without the tests, internal/) with a go.work, as a checkout has.
func fakeCheckout(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(t), filepath.Join(t.TempDir(), "statepipe")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if d.IsDir() {
			if rel != "." && top != "internal" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if rel != "go.mod" && (!strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "go.work"), []byte("go 1.26.0\n\nuse .\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// followNext runs the "next:" commands that "new" printed, as printed,
// in a shell in dir, offline; it returns what they printed.
func followNext(t *testing.T, dir, printed string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	_, next, ok := strings.Cut(printed, "\nnext:\n")
	if !ok {
		t.Fatalf("no next steps in:\n%s", printed)
	}
	cmd := exec.Command("sh", "-ec", next)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "GOWORK" && k != "GOFLAGS" && k != "PATH" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Offline: statepipe must come from the checkout the hints name.
	cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(gobin)+":"+os.Getenv("PATH"), "GOPROXY=off", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the next steps as printed failed: %v\n%s\n--- their output:\n%s", err, next, out)
	}
	return string(out)
}

// checkRuns checks the output of the generated program and its test.
func checkRuns(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"eu: 103 stored, 17 failed\n",
		"us: 69 stored, 11 failed\n",
		"orders: 172 items stored in ",
		"; 172 completed, 28 failed\n",
		"stage Store ",
		"\nok ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
}

// Inside a checkout of statepipe, "new" makes a module of its own whose
// go.mod replaces statepipe with the checkout, and its next steps work as
// printed, offline, past the checkout's go.work.
func TestNewInsideCheckoutRunsAsPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped in -short")
	}
	co := fakeCheckout(t)
	withSource(t, "") // whatever this binary was built from, the checkout counts
	t.Chdir(co)
	out := runNew(t, "new", "orders", "--dir", "examples/orders")
	mod, err := os.ReadFile(filepath.Join(co, "examples", "orders", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "require github.com/statepipe/statepipe v0.0.0") ||
		!strings.Contains(string(mod), "replace github.com/statepipe/statepipe => ../..") {
		t.Errorf("go.mod:\n%s", mod)
	}
	if !strings.Contains(out.String(), "cd examples/orders\n  GOWORK=off go mod tidy\n  GOWORK=off go run .\n") {
		t.Errorf("next steps:\n%s", out)
	}
	checkRuns(t, followNext(t, co, out.String()))
}

// Outside any module, a binary built from a checkout points the new
// module at that checkout, and its next steps work as printed.
func TestNewOutsideModuleRunsAsPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped in -short")
	}
	withSource(t, repoRoot(t))
	dir := t.TempDir()
	t.Chdir(dir)
	out := runNew(t, "new", "orders")
	if !strings.Contains(out.String(), "cd orders\n  go mod tidy\n  go run .\n  go test .\n") {
		t.Errorf("next steps:\n%s", out)
	}
	checkRuns(t, followNext(t, dir, out.String()))
}

// Inside a module of the user's, the program is a package of it: no
// go.mod; the next steps add statepipe to that module and work as
// printed.
func TestNewInsideModuleRunsAsPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped in -short")
	}
	root := repoRoot(t)
	withSource(t, root)
	mod := t.TempDir()
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/app\n\ngo 1.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // elsewhere: the steps say where to go
	dir := filepath.Join(mod, "cmd", "sync_users")
	out := runNew(t, "new", "--dir", dir, "sync_users")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); !os.IsNotExist(err) {
		t.Errorf("go.mod written inside module example.com/app (%v)", err)
	}
	s := out.String()
	if !strings.Contains(s, "module example.com/app") || !strings.Contains(s, "-replace=github.com/statepipe/statepipe="+root) ||
		!strings.Contains(s, "go run ./cmd/sync_users\n") {
		t.Errorf("next steps:\n%s", s)
	}
	got := followNext(t, ".", s)
	for _, want := range []string{"sync_users: 172 items stored in ", "\nok "} {
		if !strings.Contains(got, want) {
			t.Errorf("the output lacks %q:\n%s", want, got)
		}
	}
}

// A local build that knows no checkout says exactly what to add, and
// writes no replace it cannot know.
func TestNewWithoutCheckoutSaysWhatToAdd(t *testing.T) {
	withSource(t, "")
	dir := filepath.Join(t.TempDir(), "orders")
	out := runNew(t, "new", "orders", "--dir", dir)
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mod), "replace") || strings.Contains(string(mod), "require") {
		t.Errorf("go.mod:\n%s", mod)
	}
	if !strings.Contains(out.String(), "  go mod edit -require=github.com/statepipe/statepipe@v0.0.0 -replace=github.com/statepipe/statepipe=/path/to/statepipe\n") {
		t.Errorf("next steps:\n%s", out)
	}
}
