package statepipecheck_test

import (
	"strings"
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

// The testdata is a module that uses the real statepipe (replaced by the
// repository root), so the checks are tried against the real API. Each
// package holds one check's cases, the findings marked with // want and
// the near misses unmarked; the files whose findings carry fixes have a
// .golden file with every fix applied. All are loaded in one run: loading
// is what costs (about a minute under -race when each package is loaded
// on its own).
var cases = map[string]string{ // package -> the category its findings have
	"nextalloc":  "nextalloc",
	"nofix":      "nextalloc",
	"batchadd":   "batchadd",
	"closestage": "closeinstage",
	"submitloop": "submitloop",
	"stagesig":   "stagesig",
	"flushkeep":  "flushkeep",
	"clean":      "",
}

func TestChecksFindTheirCasesAndNotTheNearMisses(t *testing.T) {
	var patterns []string
	for p := range cases {
		patterns = append(patterns, "example.com/t/"+p)
	}
	results := analysistest.RunWithSuggestedFixes(t, analysistest.TestData(), statepipecheck.Analyzer, patterns...)

	t.Run("EachPackageHasOnlyItsCheck", func(t *testing.T) {
		for _, r := range results {
			pkg := strings.TrimPrefix(r.Pass.Pkg.Path(), "example.com/t/")
			want := cases[pkg]
			if want != "" && len(r.Diagnostics) == 0 {
				t.Errorf("%s: no findings", pkg)
			}
			for _, d := range r.Diagnostics {
				if d.Category != want {
					t.Errorf("%s: %s: category %q, want %q", pkg, r.Pass.Fset.Position(d.Pos), d.Category, want)
				}
			}
		}
	})

	t.Run("NextMethodValueWithoutAPlaceableFixIsStillReported", func(t *testing.T) {
		for _, r := range results {
			if r.Pass.Pkg.Name() != "nofix" {
				continue
			}
			for _, d := range r.Diagnostics {
				if len(d.SuggestedFixes) != 0 {
					t.Errorf("%s: offers a fix where none can be placed", r.Pass.Fset.Position(d.Pos))
				}
			}
		}
	})

	t.Run("DocumentedUseHasNoFindings", func(t *testing.T) {
		for _, r := range results {
			if r.Pass.Pkg.Name() == "clean" && len(r.Diagnostics) != 0 {
				t.Errorf("%d findings in the documented use", len(r.Diagnostics))
			}
		}
	})
}
