// Package benchkit reports benchmarks per item, as the project's workloads
// require (ns/item, allocs/item, B/item), for every module's benchmarks.
package benchkit

import (
	"runtime"
	"testing"
)

// PerItem runs run b.N times, each run processing items items, and reports
// ns/item, allocs/item and B/item.
func PerItem(b *testing.B, items int, run func()) {
	b.Helper()
	PerUnit(b, items, "item", run)
}

// PerUnit is PerItem for workloads counted in other units (groups, calls):
// it runs run b.N times, each run processing units of the named unit, and
// reports ns/unit, allocs/unit and B/unit (e.g. ns/group for unit "group").
func PerUnit(b *testing.B, units int, unit string, run func()) {
	b.Helper()
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		run()
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(units) * float64(b.N)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/"+unit)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/"+unit)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/total, "B/"+unit)
}
