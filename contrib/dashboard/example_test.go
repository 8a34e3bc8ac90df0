package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/contrib/dashboard"
)

// Mount the dashboard under a prefix of an internal mux, and read the
// same numbers the page shows from stats.json.
func ExampleNew() {
	p, err := statepipe.New[int](newOrders())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	mux := http.NewServeMux()
	mux.Handle("/debug/pipelines/", http.StripPrefix("/debug/pipelines", dashboard.New(p, dashboard.WithTitle("orders"))))
	srv := httptest.NewServer(mux) // in a program: http.ListenAndServe("127.0.0.1:6060", mux)
	defer srv.Close()

	p.Do(context.Background(), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	p.Close() // the counts are exact once closed, and the page still shows them

	res, err := http.Get(srv.URL + "/debug/pipelines/stats.json")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	var s dashboard.Snapshot
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d completed, %d failed\n", s.Title, s.Completed, s.Failed)
	for _, e := range s.Edges {
		fmt.Printf("%s -> %s: %d\n", e.From, e.To, e.Count)
	}
	// Output:
	// orders: 9 completed, 1 failed
	// (in) -> Start: 10
	// Start -> Check: 5
	// Start -> Store: 5
	// Check -> Store: 4
	// Check -> (failed): 1
	// Confirm -> (done): 9
	// Store -> bulk: 9
	// bulk -> Confirm: 9
}
