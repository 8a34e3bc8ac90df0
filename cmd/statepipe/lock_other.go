//go:build !unix

package main

import (
	"fmt"
	"os"
)

// lockFile opens the database file. Without flock(2) it takes no lock:
// on these systems two demos on one --db are not kept apart.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open database %q: %w", path, err)
	}
	return f, nil
}
