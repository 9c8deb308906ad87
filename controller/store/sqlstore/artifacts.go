package sqlstore

import (
	"context"
	"fmt"

	"github.com/livedump/livedump/controller/store"
)

// PutArtifact records an artifact, or refreshes it when the same content is
// uploaded again.
func (s *Store) PutArtifact(ctx context.Context, a store.Artifact) error {
	if _, err := s.w.Exec(ctx, PutArtifact, a.SHA256, a.Kind, a.Name, a.Size, TimeArg(a.Created)); err != nil {
		return fmt.Errorf("put artifact %s: %w", a.SHA256, err)
	}
	return nil
}

// GetArtifact returns one artifact by SHA-256.
func (s *Store) GetArtifact(ctx context.Context, sha string) (store.Artifact, error) {
	a, err := ScanArtifact(s.r.QueryRow(ctx, GetArtifact, sha))
	if err != nil {
		return store.Artifact{}, fmt.Errorf("get artifact %s: %w", sha, err)
	}
	return a, nil
}

// LatestArtifact returns the newest artifact of kind.
func (s *Store) LatestArtifact(ctx context.Context, kind string) (store.Artifact, error) {
	a, err := ScanArtifact(s.r.QueryRow(ctx, LatestArtifact, kind))
	if err != nil {
		return store.Artifact{}, fmt.Errorf("latest artifact %s: %w", kind, err)
	}
	return a, nil
}
