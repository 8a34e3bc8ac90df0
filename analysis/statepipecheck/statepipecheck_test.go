package statepipecheck_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

// The testdata is a module that uses the real statepipe (replaced by the
// repository root), so the checks are tried against the real API.

func TestNextMethodValueIsReportedWithAFieldMadeOnceAsFix(t *testing.T) {
	analysistest.RunWithSuggestedFixes(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/nextalloc")
}

func TestNextMethodValueWithoutAPlaceableFixIsStillReported(t *testing.T) {
	for _, r := range analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/nofix") {
		for _, d := range r.Diagnostics {
			if len(d.SuggestedFixes) != 0 {
				t.Errorf("%s: offers a fix where none can be placed", r.Pass.Fset.Position(d.Pos))
			}
		}
	}
}

func TestRequestUsedAfterAddAndAddResultNotReturned(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/batchadd")
}

func TestCloseReachableFromAStageOrAFlush(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/closestage")
}

func TestSubmitLoopBeforeReadingOutInTheSameGoroutine(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/submitloop")
}

func TestMethodsThatLookLikeStagesAndHelpersThatAreStages(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/stagesig")
}

func TestFlushThatKeepsItsBatch(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/flushkeep")
}

func TestDocumentedUseHasNoFindings(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), statepipecheck.Analyzer, "example.com/t/clean")
}
