package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// readDump reads dump id from offset: its description and the bytes after it.
func readDump(fc livedumpv1.FleetServiceClient, id string, offset int64) (*livedumpv1.Dump, []byte, error) {
	st, err := fc.GetDump(context.Background(), &livedumpv1.GetDumpRequest{Id: id, Offset: offset})
	if err != nil {
		return nil, nil, err
	}
	var d *livedumpv1.Dump
	var b bytes.Buffer
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return d, b.Bytes(), nil
		}
		if err != nil {
			return nil, nil, err
		}
		if m.GetDump() != nil {
			d = m.GetDump()
		}
		b.Write(m.GetChunk())
	}
}

// TestDumpDownloadResumesFromAnOffset: the controller serves an uploaded
// dump from any offset (not only chunk boundaries), with its description
// first, so that "livedumpctl dumps get" can resume from a .part and
// verify the whole file: prefix + rest hashes to the dump's SHA-256.
func TestDumpDownloadResumesFromAnOffset(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "3m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.5")
	_, _, op := provisionedLab(t, controllerOpts{})
	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=vdi", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, MaxDumps: 1})
	var d *livedumpv1.Dump
	eventually(t, 60*time.Second, "a dump uploaded", func() bool {
		for _, x := range listDumps(t, op, id) {
			if x.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED {
				d = x
				return true
			}
		}
		return false
	})
	_, full, err := readDump(op, d.GetId(), 0)
	if err != nil || int64(len(full)) != d.GetSize() {
		t.Fatalf("full download: %d bytes, %v", len(full), err)
	}
	for _, offset := range []int64{1, d.GetSize()/2 + 12345, d.GetSize() - 1, d.GetSize()} {
		desc, rest, err := readDump(op, d.GetId(), offset)
		if err != nil {
			t.Fatalf("offset %d: %v", offset, err)
		}
		if desc.GetSha256() != d.GetSha256() || desc.GetSize() != d.GetSize() {
			t.Fatalf("offset %d: description %+v", offset, desc)
		}
		if !bytes.Equal(rest, full[offset:]) {
			t.Fatalf("offset %d: %d bytes that are not the file's rest", offset, len(rest))
		}
		h := sha256.New()
		h.Write(full[:offset])
		h.Write(rest)
		if sum := hex.EncodeToString(h.Sum(nil)); sum != d.GetSha256() {
			t.Fatalf("offset %d: prefix + rest hashes to %s, want %s", offset, sum, d.GetSha256())
		}
	}
	if _, _, err := readDump(op, d.GetId(), d.GetSize()+1); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("offset past the end: %v, want InvalidArgument", err)
	}
}
