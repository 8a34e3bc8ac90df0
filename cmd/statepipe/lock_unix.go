//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on the database file for as long as
// this run has it open: a second demo on the same --db is refused at once
// instead of writing over the first one's rows. The lock is flock(2)'s,
// which SQLite does not use (it takes fcntl locks), so a reader such as
// the sqlite3 shell can still look at the database while the demo runs;
// the system drops it when the process ends, however it ends.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open database %q: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("database %q is in use by another statepipe demo; wait for it to end or choose another --db", path)
		}
		return nil, fmt.Errorf("cannot lock database %q: %w", path, err)
	}
	return f, nil
}
