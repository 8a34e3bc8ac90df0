// Command statepipevet reports statepipe stage pitfalls: the checks of
// package [github.com/statepipe/statepipe/analysis/statepipecheck].
//
// Run it on packages, or as go vet's tool:
//
//	statepipevet ./...
//	go vet -vettool=$(which statepipevet) ./...
//
// It prints file:line:col: message for each finding and exits non-zero
// when there is one; -fix applies the suggested fixes.
package main

import (
	"golang.org/x/tools/go/analysis/singlechecker"

	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

func main() { singlechecker.Main(statepipecheck.Analyzer) }
