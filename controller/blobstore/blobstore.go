// Package blobstore keeps content addressed by the hex SHA-256 of its
// bytes (sha256/ab/cdef...), on the filesystem or in an S3-compatible
// bucket. Content becomes visible under its address only after its hash is
// known and checked, so a reader never sees a partial or corrupt blob, and
// identical content is stored once.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/livedump/livedump/internal/ids"
)

// ErrNotFound is returned for a hash the store does not hold.
var ErrNotFound = errors.New("blob not found")

// ErrHashMismatch is returned when content does not hash to what the writer
// promised.
var ErrHashMismatch = errors.New("content does not match its SHA-256")

// ErrUnavailable marks errors of a store that cannot be reached or fails
// for now (S3 down, throttling): the operation can be retried later.
var ErrUnavailable = errors.New("blob store unavailable")

// Blobs is a content-addressed store.
type Blobs interface {
	// Put streams r into the store, at most max bytes, and returns the
	// content's hash and size. If want is not empty the content must hash
	// to it. Nothing is visible under the hash before it is checked.
	Put(ctx context.Context, r io.Reader, want string, max int64) (sum string, size int64, err error)
	// Open opens the blob with hash sum; it returns ErrNotFound if there
	// is none.
	Open(ctx context.Context, sum string) (Reader, error)
	// Has reports whether the store holds content with hash sum.
	Has(ctx context.Context, sum string) (bool, error)
	// Delete removes the content with hash sum; content that is not there
	// is not an error, so a retried delete succeeds. Content is shared by
	// everything with the same hash: the caller checks that nothing else
	// names it. A reader already open may go on reading it on a
	// filesystem (the file stays until closed), not on S3.
	Delete(ctx context.Context, sum string) error
	// Upload starts or resumes the resumable upload id of content
	// announced as size bytes hashing to sum. committed is 0 or an offset
	// an earlier Sync of the same upload returned, possibly in another
	// process sharing the store.
	Upload(ctx context.Context, id, sum string, size, committed int64) (Upload, error)
	// DiscardUpload removes whatever the unfinished upload id holds (a
	// partial file, a multipart upload and its resume state); an upload
	// that holds nothing is not an error.
	DiscardUpload(ctx context.Context, id string) error
	// ExpireUploads discards the unfinished uploads that made no progress
	// since before, except those keep names (uploads in progress in this
	// process), and the leftovers of interrupted Puts, and returns the ids
	// of the uploads it discarded.
	ExpireUploads(ctx context.Context, before time.Time, keep func(id string) bool) ([]string, error)
}

// Reader reads a blob. Seek makes ranged reads possible, so downloads can
// resume.
type Reader interface {
	io.ReadSeekCloser
	// Size is the blob's length in bytes.
	Size() int64
}

// Upload is one resumable upload in progress.
type Upload interface {
	// Offset is where writing resumes. It is 0 when the partial data is
	// out of reach (another machine's disk, or lost), even if the
	// committed offset was not; the writer must then start over.
	Offset() int64
	// Write appends to the content. It fails past the announced size.
	Write(p []byte) (int, error)
	// Sync makes as much of what was written durable as the backend can
	// and returns the offset up to which it is durable; an upload resumed
	// at that offset continues from there. Sync may run on another
	// goroutine while a Write runs (one Sync at a time): it then covers at
	// least what was written before it was called.
	Sync(ctx context.Context) (durable int64, err error)
	// Finish checks that the content hashes to the announced SHA-256 and
	// publishes it under its address. On ErrHashMismatch everything
	// written is discarded.
	Finish(ctx context.Context) error
	// Close releases the upload without finishing it; what is durable
	// stays for a resume. Close after Finish does nothing.
	Close() error
}

var uploadID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidSHA256 reports whether s is a lower-case hex SHA-256 (ids.SHA256).
// Hashes become paths and keys, so nothing else is accepted.
func ValidSHA256(s string) error { return ids.SHA256(s) }

// checkUploadID validates an upload id, which becomes a file name or key.
func checkUploadID(id string) error {
	if !uploadID.MatchString(id) {
		return fmt.Errorf("upload id %q: want 1-128 letters, digits, _ or -", id)
	}
	return nil
}

// checkUpload validates the arguments of Blobs.Upload: the id becomes a
// file name or key as well.
func checkUpload(id, sum string, size, committed int64) error {
	if err := checkUploadID(id); err != nil {
		return err
	}
	if err := ValidSHA256(sum); err != nil {
		return err
	}
	if size <= 0 || committed < 0 || committed > size {
		return fmt.Errorf("upload %s: committed %d of %d bytes is out of range", id, committed, size)
	}
	return nil
}

// errPastSize is returned by Upload.Write for more data than announced.
func errPastSize(size int64) error {
	return fmt.Errorf("more data than the announced %d bytes", size)
}

func mismatch(got, want string) error {
	return fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, got, want)
}
