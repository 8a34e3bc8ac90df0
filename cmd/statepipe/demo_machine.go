package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/statepipe/statepipe"
)

// File is one file of the source tree on its way into the database: the
// demo's data type, one row of the files table.
type File struct {
	Path string // slash-separated, relative to the source root
	Top  string // top-level directory ("." for files at the root): its group
	Kind string // "go" or "other"

	Size     int64
	Lines    int
	Package  string // Go files: the package clause
	Imports  int    // Go files: import specs
	Funcs    int    // Go files: function and method declarations
	ParseErr string // Go files that do not parse (testdata has many): the first error
	ReadErr  string // a file that could not be read still gets its row, with the reason
	SHA256   string // hex; empty if the file could not be read

	Batch     int64 // the flush that wrote the row
	Committed bool  // set by the last stage, after the bulk write

	content []byte // read by ParseGo or ReadOther, hashed by Hash, then dropped
}

// Dir is the file's directory relative to the source root: its package path.
func (f *File) Dir() string { return path.Dir(f.Path) }

// etl is the demo's state machine. Its stages, in the order a file meets
// them:
//
//	Start ─┬─ ParseGo ───┬─ Hash ─ Store ⇢ (bulk INSERT) ⇢ Committed
//	       └─ ReadOther ─┘
//
// Store hands the file to a Batcher; the worker is released at once and the
// file resumes at Committed once its batch is in the database.
type etl struct {
	root  string // the source root, prefixed to File.Path to read it
	batch *statepipe.Batcher[File]
	db    *store

	// Stage values made once, so that naming the next stage allocates
	// nothing (see the doc of statepipe.Stage).
	parseGo, readOther, hash, store, committed statepipe.Stage[File]

	flushes atomic.Int64 // flush ids, one per bulk write

	afterFlush func(id int64) // called after each committed flush; for tests
}

func newETL(root string, db *store, afterFlush func(int64), opts ...statepipe.BatchOption) *etl {
	m := &etl{root: root, db: db, afterFlush: afterFlush}
	m.parseGo, m.readOther, m.hash, m.store, m.committed = m.ParseGo, m.ReadOther, m.Hash, m.Store, m.Committed
	m.batch = statepipe.NewBatcher(m.flush, opts...)
	return m
}

// Start classifies the path: Go files are parsed, the rest take the light
// route.
func (m *etl) Start(r statepipe.Request[File]) statepipe.Request[File] {
	if strings.HasSuffix(r.Data.Path, ".go") {
		r.Data.Kind = "go"
		r.Next = m.parseGo
	} else {
		r.Data.Kind = "other"
		r.Next = m.readOther
	}
	return r
}

// ParseGo reads a Go file and parses it for its package name, imports,
// functions and lines. A file that does not parse is still recorded, with
// what could be parsed and the first error.
func (m *etl) ParseGo(r statepipe.Request[File]) statepipe.Request[File] {
	if !m.read(&r.Data) {
		r.Next = m.store // unreadable: nothing to parse or hash; the row records why
		return r
	}
	inspectGo(&r.Data)
	r.Next = m.hash
	return r
}

// ReadOther reads any other file for its size and lines.
func (m *etl) ReadOther(r statepipe.Request[File]) statepipe.Request[File] {
	if !m.read(&r.Data) {
		r.Next = m.store
		return r
	}
	r.Next = m.hash
	return r
}

// Hash takes the SHA-256 of the content and drops the content.
func (m *etl) Hash(r statepipe.Request[File]) statepipe.Request[File] {
	hashContent(&r.Data)
	r.Next = m.store
	return r
}

// Store parks the file in the batch; flush writes the batch with multi-row
// INSERTs in one transaction and sends every file on to Committed.
func (m *etl) Store(r statepipe.Request[File]) statepipe.Request[File] {
	r.Next = m.committed
	return m.batch.Add(r)
}

// Committed runs after the bulk write: the row is in the database.
func (m *etl) Committed(r statepipe.Request[File]) statepipe.Request[File] {
	r.Data.Committed = true
	return r
}

// Close is called once, after the pipelines have shut down.
func (m *etl) Close() {}

// flush writes one batch in one transaction. On error nothing of the batch
// is in the database and every file in it fails with the error.
func (m *etl) flush(ctx context.Context, batch []statepipe.Request[File]) error {
	id := m.flushes.Add(1)
	if err := m.db.insertBatch(ctx, id, batch); err != nil {
		return err
	}
	for i := range batch {
		// Set only once committed: a file with a batch is in the database,
		// even if its context ends before Committed runs.
		batch[i].Data.Batch = id
		batch[i].Next = m.committed
	}
	if m.afterFlush != nil {
		m.afterFlush(id)
	}
	return nil
}

// read fills f.content and f.Size; it reports false, with f.ReadErr set, if
// the file cannot be read.
func (m *etl) read(f *File) bool {
	return readFile(filepath.Join(m.root, filepath.FromSlash(f.Path)), f)
}

func readFile(name string, f *File) bool {
	b, err := os.ReadFile(name)
	if err != nil {
		f.ReadErr = err.Error()
		return false
	}
	f.content = b
	f.Size = int64(len(b))
	f.Lines = countLines(b)
	return true
}

// inspectGo parses f.content. Comments are skipped and identifiers are not
// resolved: the demo needs declarations only, and this halves the cost.
func inspectGo(f *File) {
	fset := token.NewFileSet()
	af, err := parser.ParseFile(fset, f.Path, f.content, parser.SkipObjectResolution)
	if err != nil {
		msg := err.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		f.ParseErr = msg
	}
	if af == nil {
		return
	}
	if af.Name != nil && af.Name.Name != "_" {
		f.Package = af.Name.Name
	}
	f.Imports = len(af.Imports)
	for _, d := range af.Decls {
		if _, ok := d.(*ast.FuncDecl); ok {
			f.Funcs++
		}
	}
}

func hashContent(f *File) {
	sum := sha256.Sum256(f.content)
	f.SHA256 = hex.EncodeToString(sum[:])
	f.content = nil
}

// countLines counts lines as an editor shows them: a last line without a
// newline still counts.
func countLines(b []byte) int {
	n := bytes.Count(b, []byte{'\n'})
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}

// inspect does the whole per-file job in one call: the baseline's way.
func inspect(root string, f File) File {
	if strings.HasSuffix(f.Path, ".go") {
		f.Kind = "go"
	} else {
		f.Kind = "other"
	}
	if !readFile(filepath.Join(root, filepath.FromSlash(f.Path)), &f) {
		return f
	}
	if f.Kind == "go" {
		inspectGo(&f)
	}
	hashContent(&f)
	return f
}
