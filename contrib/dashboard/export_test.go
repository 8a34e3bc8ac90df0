package dashboard

import "time"

// SetClock makes d's sampler read the time from now.
func SetClock(d *Dashboard, now func() time.Time) { d.sampler.now = now }

// Renders returns how many times d laid out its graph.
func Renders(d *Dashboard) int {
	d.drawing.mu.Lock()
	defer d.drawing.mu.Unlock()
	return d.drawing.n
}

// PageDOT is the DOT the page's drawing is made from.
var PageDOT = pageDOT
