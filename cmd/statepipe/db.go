package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/statepipe/statepipe"
	_ "modernc.org/sqlite" // pure-Go SQLite: no cgo
)

// The demo's tables. files holds one row per file walked; batches one row
// per flush, written in the flush's own transaction, so that a reader can
// check no batch is in the database partly; runs one row per run.
var schema = []string{
	`CREATE TABLE runs (
		id       INTEGER PRIMARY KEY,
		mode     TEXT NOT NULL,    -- statepipe or baseline
		src      TEXT NOT NULL,
		walked   INTEGER NOT NULL, -- files found by the walk
		started  TEXT NOT NULL,
		finished TEXT,
		status   TEXT NOT NULL,    -- running, complete, interrupted or failed
		rows     INTEGER           -- rows in files when the run ended
	)`,
	`CREATE TABLE batches (
		id   INTEGER PRIMARY KEY, -- the flush
		rows INTEGER NOT NULL,
		at   TEXT NOT NULL
	)`,
	`CREATE TABLE files (
		path        TEXT PRIMARY KEY, -- relative to the source root
		dir         TEXT NOT NULL,    -- its directory: the package path
		top         TEXT NOT NULL,    -- top-level directory: the group
		kind        TEXT NOT NULL,    -- go or other
		size        INTEGER NOT NULL,
		lines       INTEGER NOT NULL,
		package     TEXT,             -- Go files only
		imports     INTEGER,
		funcs       INTEGER,
		parse_error TEXT,
		read_error  TEXT,
		sha256      TEXT,
		batch       INTEGER           -- the flush that wrote it; NULL in the baseline
	)`,
}

var ourTables = []string{"batches", "files", "runs"}

const fileColumns = 13

// maxParams is SQLite's default bound on parameters in one statement
// (SQLITE_MAX_VARIABLE_NUMBER); a batch is written in statements of at
// most this many values.
const maxParams = 32766

// store is the demo's database. Writes go through one connection: SQLite
// has one writer at a time anyway.
type store struct {
	db   *sql.DB
	path string
	lock *os.File // held until Close: no other demo writes this database meanwhile

	mu      sync.Mutex
	inserts map[int]string // multi-row INSERT text by row count
}

// openStore opens (creating if needed) the SQLite file at path and checks
// that it is a database the demo may overwrite: empty, or made by the demo.
// It refuses a database another demo has open (see lockFile).
func openStore(ctx context.Context, path string) (*store, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("cannot open database %q: the path must not contain '?'", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("cannot open database %q: it is a directory", path)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("cannot open database %q: directory %s does not exist", path, filepath.Dir(path))
	}
	lock, err := lockFile(path)
	if err != nil {
		return nil, err
	}
	s, err := open(ctx, path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

func open(ctx context.Context, path string) (*store, error) {
	// WAL with synchronous=NORMAL: a crash loses at most the last
	// transactions, never consistency. Both the demo and the baseline use it.
	dsn := path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("cannot open database %q: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &store{db: db, path: path, inserts: make(map[int]string)}
	tables, err := s.tables(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot open database %q: %w", path, err)
	}
	for _, t := range tables {
		if !slices.Contains(ourTables, t) {
			db.Close()
			return nil, fmt.Errorf("database %q has a table %q that the demo did not make; "+
				"refusing to overwrite it (choose another --db)", path, t)
		}
	}
	return s, nil
}

func (s *store) tables(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// reset replaces whatever a previous run left with empty tables and a new
// run row, in one transaction: a reader sees the old data or the new
// tables, never a mix.
func (s *store) reset(ctx context.Context, mode, src string, walked int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, t := range ourTables {
		if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return err
		}
	}
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO runs (id, mode, src, walked, started, status) VALUES (1, ?, ?, ?, ?, 'running')`,
		mode, src, walked, now()); err != nil {
		return err
	}
	return tx.Commit()
}

// finishRun records how the run ended. It uses its own context: it must
// run after an interruption too.
func (s *store) finishRun(status string) error {
	_, err := s.db.Exec(`UPDATE runs SET finished = ?, status = ?, rows = (SELECT count(*) FROM files) WHERE id = 1`,
		now(), status)
	return err
}

// insertBatch writes the batch and its batches row in one transaction.
func (s *store) insertBatch(ctx context.Context, id int64, batch []statepipe.Request[File]) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	per := maxParams / fileColumns
	args := make([]any, 0, min(len(batch), per)*fileColumns)
	for start := 0; start < len(batch); start += per {
		chunk := batch[start:min(start+per, len(batch))]
		args = args[:0]
		for i := range chunk {
			args = fileArgs(args, &chunk[i].Data, id)
		}
		if _, err := tx.ExecContext(ctx, s.insertSQL(len(chunk)), args...); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO batches (id, rows, at) VALUES (?, ?, ?)`, id, len(batch), now()); err != nil {
		return err
	}
	return tx.Commit()
}

// insertOne writes one row in its own (autocommit) transaction: the
// baseline's way.
func (s *store) insertOne(ctx context.Context, f *File) error {
	_, err := s.db.ExecContext(ctx, s.insertSQL(1), fileArgs(nil, f, 0)...)
	return err
}

// insertSQL returns the text of an INSERT of n rows, made once per n.
func (s *store) insertSQL(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.inserts[n]; ok {
		return q
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO files (path, dir, top, kind, size, lines, package, imports, funcs, parse_error, read_error, sha256, batch) VALUES `)
	row := "(" + strings.Repeat("?,", fileColumns-1) + "?)"
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	q := b.String()
	s.inserts[n] = q
	return q
}

// fileArgs appends f's column values; batch 0 is stored as NULL.
func fileArgs(args []any, f *File, batch int64) []any {
	var pkg, imports, funcs any
	if f.Kind == "go" && f.ReadErr == "" {
		pkg, imports, funcs = nullString(f.Package), f.Imports, f.Funcs
	}
	var b any
	if batch > 0 {
		b = batch
	}
	return append(args, f.Path, f.Dir(), f.Top, f.Kind, f.Size, f.Lines, pkg, imports, funcs,
		nullString(f.ParseErr), nullString(f.ReadErr), nullString(f.SHA256), b)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// topPackagesQuery is the query the summary shows: proof that the data is
// really in the database.
const topPackagesQuery = `SELECT dir, package, count(*) AS files, sum(funcs) AS funcs, sum(lines) AS lines
FROM files
WHERE kind = 'go' AND package IS NOT NULL AND dir NOT LIKE '%testdata%' AND path NOT LIKE '%\_test.go' ESCAPE '\'
GROUP BY dir, package
ORDER BY funcs DESC, dir
LIMIT ?`

type packageRow struct {
	Dir, Package        string
	Files, Funcs, Lines int64
}

func (s *store) topPackages(ctx context.Context, n int) ([]packageRow, error) {
	rows, err := s.db.QueryContext(ctx, topPackagesQuery, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []packageRow
	for rows.Next() {
		var p packageRow
		if err := rows.Scan(&p.Dir, &p.Package, &p.Files, &p.Funcs, &p.Lines); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// counts returns the rows in files and in batches.
func (s *store) counts(ctx context.Context) (files, batches int64, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM batches)`).Scan(&files, &batches)
	return files, batches, err
}

// Close folds the write-ahead log back into the database file, so that
// what is left is one self-contained file, and closes it.
func (s *store) Close() error {
	_, err := s.db.Exec(`PRAGMA journal_mode = DELETE`)
	return errors.Join(err, s.db.Close(), s.lock.Close())
}

// recordRun marks the run complete (or interrupted) and reads back the
// figures of the summary: rows, transactions and the top packages.
func (s *store) recordRun(ctx context.Context, db string, interrupted bool) (rows, batches int64, top []packageRow, err error) {
	status := "complete"
	if interrupted {
		status = "interrupted"
	}
	if err := s.finishRun(status); err != nil {
		return 0, 0, nil, fmt.Errorf("cannot record the run in %s: %w", db, err)
	}
	if rows, batches, err = s.counts(ctx); err != nil {
		return 0, 0, nil, fmt.Errorf("cannot read back %s: %w", db, err)
	}
	if top, err = s.topPackages(ctx, 5); err != nil {
		return 0, 0, nil, fmt.Errorf("cannot query %s: %w", db, err)
	}
	return rows, batches, top, nil
}
