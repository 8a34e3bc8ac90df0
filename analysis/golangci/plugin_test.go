package golangci_test

import (
	"testing"

	"github.com/golangci/plugin-module-register/register"

	_ "github.com/statepipe/statepipe/analysis/golangci"
	"github.com/statepipe/statepipe/analysis/statepipecheck"
)

func TestPluginRegistersTheAnalyzerWithTypeInformation(t *testing.T) {
	newPlugin, err := register.GetPlugin("statepipe")
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPlugin(map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	as, err := p.BuildAnalyzers()
	if err != nil || len(as) != 1 || as[0] != statepipecheck.Analyzer {
		t.Fatalf("analyzers %v, %v: want statepipecheck.Analyzer alone", as, err)
	}
	if m := p.GetLoadMode(); m != register.LoadModeTypesInfo {
		t.Errorf("load mode %q, want %q", m, register.LoadModeTypesInfo)
	}
}
