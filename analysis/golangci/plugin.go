// Package golangci registers statepipevet's analyzer as a golangci-lint
// module plugin named "statepipe". Build a golangci-lint that has it with
// a .custom-gcl.yml such as
//
//	version: v2.15.0
//	plugins:
//	  - module: github.com/statepipe/statepipe/analysis
//	    import: github.com/statepipe/statepipe/analysis/golangci
//	    version: latest
//
// then `golangci-lint custom`, and enable it in .golangci.yml:
//
//	linters:
//	  enable: [statepipe]
//	  settings:
//	    custom:
//	      statepipe:
//	        type: module
//	        description: statepipe stage pitfalls
//
// The plugin takes no settings.
package golangci

import (
	"github.com/golangci/plugin-module-register/register"
	"golang.org/x/tools/go/analysis"

	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

func init() { register.Plugin("statepipe", New) }

// New returns the plugin; golangci-lint calls it with the linter's
// settings, which it ignores.
func New(any) (register.LinterPlugin, error) { return plugin{}, nil }

type plugin struct{}

func (plugin) BuildAnalyzers() ([]*analysis.Analyzer, error) {
	return []*analysis.Analyzer{statepipecheck.Analyzer}, nil
}

// GetLoadMode asks for type information: every check needs it.
func (plugin) GetLoadMode() string { return register.LoadModeTypesInfo }
