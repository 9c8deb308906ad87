package s3test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestStart(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	c := s.Client(t)
	b1, b2 := s.NewBucket(t), s.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket returned %s twice", b1)
	}
	for _, b := range []string{b1, b2} {
		ok, err := c.BucketExists(ctx, b)
		if err != nil || !ok {
			t.Fatalf("bucket %s: exists=%v %v", b, ok, err)
		}
	}
	want := []byte("content")
	if _, err := c.PutObject(ctx, b1, "a/b", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	o, err := c.GetObject(ctx, b1, "a/b", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got, err := io.ReadAll(o)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %q %v", got, err)
	}
	if _, err := c.StatObject(ctx, b2, "a/b", minio.StatObjectOptions{}); err == nil {
		t.Fatal("buckets share objects")
	}
}
