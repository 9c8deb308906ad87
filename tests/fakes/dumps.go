package fakes

import (
	"bytes"
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Dumps stands in for dumps.Receiver: stored dumps with their content in
// memory, what agents reported recorded. The zero value is ready to use.
type Dumps struct {
	// Err, when set, is returned by every call that can fail.
	Err error
	// ReportErr is returned by Report alone.
	ReportErr error

	mu       sync.Mutex
	dumps    map[string]store.Dump
	content  map[string][]byte
	memory   map[string]uint64
	reports  Log[AgentMsg[*livedumpv1.Dump]]
	uploads  Log[AgentMsg[[]*livedumpv1.UploadDumpRequest]]
	offsets  Log[string]
	openings int
}

// Add stores d with its content.
func (f *Dumps) Add(d store.Dump, content []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dumps == nil {
		f.dumps, f.content = map[string]store.Dump{}, map[string][]byte{}
	}
	f.dumps[d.ID], f.content[d.ID] = d, content
}

// Memory returns the memory size recorded for the agent, and whether one was.
func (f *Dumps) Memory(agentID string) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.memory[agentID]
	return m, ok
}

// Reports returns the dump reports received.
func (f *Dumps) Reports() []AgentMsg[*livedumpv1.Dump] { return f.reports.All() }

// Uploads returns, for each Upload, the agent and the messages it read.
func (f *Dumps) Uploads() []AgentMsg[[]*livedumpv1.UploadDumpRequest] { return f.uploads.All() }

// Offsets returns "agent/dump" for each Offset asked.
func (f *Dumps) Offsets() []string { return f.offsets.All() }

// SetMemory implements api.DumpReceiver.
func (f *Dumps) SetMemory(_ context.Context, agentID string, bytes uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if f.memory == nil {
		f.memory = map[string]uint64{}
	}
	f.memory[agentID] = bytes
	return nil
}

// Report implements api.DumpReceiver.
func (f *Dumps) Report(_ context.Context, agentID string, d *livedumpv1.Dump) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports.add(AgentMsg[*livedumpv1.Dump]{agentID, d})
	if f.ReportErr != nil {
		return f.ReportErr
	}
	return f.Err
}

// Offset implements api.DumpReceiver: the size of the content stored
// under the dump's ID, if the agent owns it; else ErrNotFound.
func (f *Dumps) Offset(_ context.Context, agentID, id string) (*livedumpv1.DumpOffsetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offsets.add(agentID + "/" + id)
	if f.Err != nil {
		return nil, f.Err
	}
	d, ok := f.dumps[id]
	if !ok || d.AgentID != agentID {
		return nil, store.ErrNotFound
	}
	return &livedumpv1.DumpOffsetResponse{Committed: int64(len(f.content[id])), State: livedumpv1.DumpState_DUMP_STATE_UPLOADING}, nil
}

// Upload implements api.DumpReceiver: it reads the stream to its end,
// records what it read and answers with Err, or an empty response.
func (f *Dumps) Upload(agentID string, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) error {
	var msgs []*livedumpv1.UploadDumpRequest
	var err error
	for {
		var m *livedumpv1.UploadDumpRequest
		if m, err = stream.Recv(); err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	f.mu.Lock()
	f.uploads.add(AgentMsg[[]*livedumpv1.UploadDumpRequest]{agentID, msgs})
	ferr := f.Err
	f.mu.Unlock()
	if err != io.EOF {
		return err
	}
	if ferr != nil {
		return ferr
	}
	return stream.SendAndClose(&livedumpv1.UploadDumpResponse{})
}

// Openings is how many dumps Open opened.
func (f *Dumps) Openings() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.openings
}

// Open implements api.DumpReader.
func (f *Dumps) Open(_ context.Context, id string) (store.Dump, blobstore.Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return store.Dump{}, nil, f.Err
	}
	d, ok := f.dumps[id]
	if !ok {
		return store.Dump{}, nil, store.ErrNotFound
	}
	f.openings++
	return d, &reader{bytes.NewReader(f.content[id])}, nil
}

// reader is a blobstore.Reader over bytes in memory.
type reader struct{ *bytes.Reader }

func (reader) Close() error { return nil }
