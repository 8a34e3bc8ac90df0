package statepipecheck_test

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/checker"
	"golang.org/x/tools/go/packages"

	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

// The analyzer run from Go, as a driver other than statepipevet would:
// load the packages with their syntax and types, analyze, read the
// diagnostics. Here it runs on a package of its testdata that submits
// every item before reading the results.
func ExampleAnalyzer() {
	cfg := &packages.Config{
		Mode: packages.LoadAllSyntax,
		Dir:  "testdata",
		Env:  append(os.Environ(), "GOWORK=off", "GOPROXY=off", "GOFLAGS=-mod=mod"),
	}
	pkgs, err := packages.Load(cfg, "./submitloop")
	if err != nil {
		panic(err)
	}
	graph, err := checker.Analyze([]*analysis.Analyzer{statepipecheck.Analyzer}, pkgs, nil)
	if err != nil {
		panic(err)
	}
	for act := range graph.All() {
		if act.Analyzer != statepipecheck.Analyzer {
			continue
		}
		for _, d := range act.Diagnostics {
			pos := act.Package.Fset.Position(d.Pos)
			fmt.Printf("%s:%d: %s\n", filepath.Base(pos.Filename), pos.Line, d.Category)
		}
	}
	// Output:
	// main.go:17: submitloop
	// main.go:33: submitloop
}
