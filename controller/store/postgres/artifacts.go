package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
)

const artifactColumns = `sha256, kind, name, size, created`

func scanArtifact(row pgx.Row) (store.Artifact, error) {
	var a store.Artifact
	var created *int64
	if err := row.Scan(&a.SHA256, &a.Kind, &a.Name, &a.Size, &created); err != nil {
		return store.Artifact{}, mapErr(err)
	}
	a.Created = timeVal(created)
	return a, nil
}

// PutArtifact records an artifact, or refreshes it when the same content is
// uploaded again.
func (s *Store) PutArtifact(ctx context.Context, a store.Artifact) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO artifacts (`+artifactColumns+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (sha256) DO UPDATE SET kind = excluded.kind, name = excluded.name, created = excluded.created`,
		a.SHA256, a.Kind, a.Name, a.Size, timeArg(a.Created))
	if err != nil {
		return fmt.Errorf("put artifact %s: %w", a.SHA256, err)
	}
	return nil
}

// GetArtifact returns one artifact by SHA-256.
func (s *Store) GetArtifact(ctx context.Context, sha string) (store.Artifact, error) {
	a, err := scanArtifact(s.pool.QueryRow(ctx, `SELECT `+artifactColumns+` FROM artifacts WHERE sha256 = $1`, sha))
	if err != nil {
		return store.Artifact{}, fmt.Errorf("get artifact %s: %w", sha, err)
	}
	return a, nil
}

// LatestArtifact returns the newest artifact of kind.
func (s *Store) LatestArtifact(ctx context.Context, kind string) (store.Artifact, error) {
	a, err := scanArtifact(s.pool.QueryRow(ctx, `SELECT `+artifactColumns+` FROM artifacts
		WHERE kind = $1 ORDER BY created DESC, sha256 LIMIT 1`, kind))
	if err != nil {
		return store.Artifact{}, fmt.Errorf("latest artifact %s: %w", kind, err)
	}
	return a, nil
}
