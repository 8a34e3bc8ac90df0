package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/template"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

const newHelp = `Usage: statepipe new NAME [--dir D]

Generates a ready-to-run statepipe pipeline in directory D (default ./NAME):

  item.go          the data type and sample data
  machine.go       the state machine: Start, Enrich, Store (a batch stage), Done
  bulk.go          a fake bulk client to replace with your service
  main.go          submits two sources through their own groups, prints results
  machine_test.go  a test of the whole machine
  go.mod           only when D is not inside a Go module already

NAME is the program's name: a Go identifier in ASCII, not a keyword. D must
not exist yet.

Flags:
`

// scaffold is what the templates are filled with.
type scaffold struct {
	Name    string // the program's name
	Module  string // module path for a generated go.mod
	Version string // statepipe version for go.mod's require; empty: let go mod tidy choose
}

func newCommand(args []string, e env) error {
	fs := flag.NewFlagSet("new", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "the directory `D` to create (default ./NAME); it must not exist")
	pos, err := parseFlags(fs, "new", args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, newHelp)
		printFlags(e.stdout, fs)
		return err
	}
	if err != nil {
		return err
	}
	switch len(pos) {
	case 0:
		return usageError{cmd: "new", msg: "new needs a NAME"}
	case 1:
	default:
		return usageError{cmd: "new", msg: fmt.Sprintf("new takes one NAME, got %d arguments", len(pos))}
	}
	name := pos[0]
	if err := checkName(name); err != nil {
		return usageError{cmd: "new", msg: err.Error()}
	}
	if *dir == "" {
		*dir = name
	}
	module, inside := enclosingModule(*dir)
	s := scaffold{Name: name, Module: name, Version: statepipeVersion()}
	files, err := s.render(!inside)
	if err != nil {
		return err
	}
	if err := writeFiles(*dir, files); err != nil {
		return err
	}
	printNextSteps(e.stdout, *dir, files, module, inside)
	return nil
}

// checkName reports why name cannot name a generated program.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("NAME must not be empty")
	case token.IsKeyword(name):
		return fmt.Errorf("NAME %q is a Go keyword", name)
	case !token.IsIdentifier(name):
		return fmt.Errorf("NAME %q is not a Go identifier (letters, digits and _, not starting with a digit)", name)
	case strings.IndexFunc(name, func(r rune) bool { return r > 127 }) >= 0:
		return fmt.Errorf("NAME %q is also the module path and directory: use ASCII letters, digits and _", name)
	case name == "main":
		return errors.New(`NAME "main" cannot be a module path; choose another`)
	}
	return nil
}

// render fills every template; withMod includes go.mod. The Go files are
// gofmt'ed, which also catches a template that makes invalid Go.
func (s scaffold) render(withMod bool) (map[string][]byte, error) {
	paths, err := fs.Glob(templateFS, "templates/*.tmpl")
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".tmpl")
		if name == "go.mod" && !withMod {
			continue
		}
		t, err := template.ParseFS(templateFS, p)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, s); err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		out := b.Bytes()
		if strings.HasSuffix(name, ".go") {
			if out, err = format.Source(out); err != nil {
				return nil, fmt.Errorf("template %s makes invalid Go: %w", name, err)
			}
		}
		files[name] = out
	}
	return files, nil
}

// writeFiles creates dir, which must not exist, and writes files in it.
// On failure it removes what it created.
func writeFiles(dir string, files map[string][]byte) (err error) {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists; choose another NAME or --dir", dir)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; choose another NAME or --dir", dir)
		}
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// enclosingModule returns the module path of the go.mod above dir, if any.
func enclosingModule(dir string) (module string, ok bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			return modulePath(b), true
		}
		if parent := filepath.Dir(d); parent == d {
			return "", false
		}
	}
}

func modulePath(gomod []byte) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// statepipeVersion is the version of statepipe this binary was built
// with, for the generated go.mod; empty when it is not a released one (a
// local build), and go mod tidy then picks one.
func statepipeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/statepipe/statepipe" && d.Replace == nil &&
			strings.HasPrefix(d.Version, "v") && d.Version != "v0.0.0" {
			return d.Version
		}
	}
	return ""
}

func printNextSteps(w io.Writer, dir string, files map[string][]byte, module string, inside bool) {
	names := make([]string, 0, len(files))
	for _, n := range []string{"go.mod", "item.go", "machine.go", "bulk.go", "main.go", "machine_test.go"} {
		if _, ok := files[n]; ok {
			names = append(names, n)
		}
	}
	fmt.Fprintf(w, "created %s: %s\n\nnext:\n", dir, strings.Join(names, " "))
	if inside {
		rel := "./" + filepath.ToSlash(filepath.Clean(dir))
		if filepath.IsAbs(dir) {
			rel = dir
		}
		fmt.Fprintf(w, "  go get github.com/statepipe/statepipe   # if module %s does not require it yet\n", module)
		fmt.Fprintf(w, "  go run %s\n  go test %s\n", rel, rel)
		return
	}
	fmt.Fprintf(w, "  cd %s\n  go mod tidy\n  go run .\n  go test .\n", dir)
}
