package blobstore

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/livedump/livedump/tests/s3test"
)

func TestOpenFilesystem(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, opts := range []Options{
		{Dir: filepath.Join(dir, "a")},
		{URL: "file://" + filepath.ToSlash(filepath.Join(dir, "b")), Dir: "ignored"},
	} {
		b, err := Open(ctx, opts)
		if err != nil {
			t.Fatalf("Open(%+v): %v", opts, err)
		}
		if _, ok := b.(*Store); !ok {
			t.Fatalf("Open(%+v) = %T, want the filesystem store", opts, b)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	keys := Options{AccessKey: "k", SecretKey: "s"}
	for _, tc := range []struct {
		url, want string
		opts      Options
	}{
		{"", "neither a URL nor a directory", Options{}},
		{"ftp://x/y", "scheme must be file or s3", keys},
		{"file://host/abs", "no host", keys},
		{"file:relative", "absolute", keys},
		{"file:///abs?x=1", "no query", keys},
		{"s3://Bucket", `s3 bucket "Bucket"`, keys},
		{"s3://ab", `s3 bucket "ab"`, keys},
		{"s3://a_b", `s3 bucket "a_b"`, keys},
		{"s3://my.bucket", `s3 bucket "my.bucket"`, keys},
		{"s3://-bucket", `s3 bucket "-bucket"`, keys},
		{"s3://xn--bucket", `s3 bucket "xn--bucket"`, keys},
		{"s3://bucket/a/../b", `segment ".."`, keys},
		{"s3://bucket/a//b", `segment ""`, keys},
		{"s3://bucket/.hidden", `segment ".hidden"`, keys},
		{"s3://bucket/a%20b", `segment "a b"`, keys},
		{"s3://bucket/" + strings.Repeat("a/", 300), "longer than 512", keys},
		{"s3://bucket?endpoint=ftp://host", "s3 endpoint", keys},
		{"s3://bucket?endpoint=http://", "s3 endpoint", keys},
		{"s3://bucket?endpoint=http://host/path", "s3 endpoint", keys},
		{"s3://bucket?endpoint=http://host:", "s3 endpoint", keys},
		{"s3://bucket?region=US_EAST", "s3 region", keys},
		{"s3://bucket?create=yes", "create=", keys},
		{"s3://bucket?bogus=1", `unknown parameter "bogus"`, keys},
		{"s3://bucket?region=a&region=b", "region given 2 times", keys},
		{"s3://key:secret@bucket", "credentials do not belong in the URL", keys},
		{"s3://bucket?endpoint=http://127.0.0.1:1", "s3 credentials", Options{}},
		{"s3://bucket?endpoint=http://127.0.0.1:1", "s3 credentials", Options{AccessKey: "k"}},
	} {
		tc.opts.URL = tc.url
		_, err := Open(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error with %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret@") {
			t.Errorf("Open(%q) error shows the secret: %v", tc.url, err)
		}
	}
}

func TestOpenS3(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)

	// Credentials from the environment; the prefix is normalized.
	b, err := Open(ctx, Options{URL: "s3://" + bucket + "/livedump/prod/?endpoint=" + srv.Endpoint + "&region=us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	s := b.(*S3)
	if s.bucket != bucket || s.prefix != "livedump/prod/" {
		t.Fatalf("bucket %q prefix %q", s.bucket, s.prefix)
	}
	if _, _, err := b.Put(ctx, strings.NewReader("x"), "", 1); err != nil {
		t.Fatal(err)
	}

	// A missing bucket is named, and created only on request.
	_, err = Open(ctx, Options{URL: "s3://missing-bucket?endpoint=" + srv.Endpoint})
	if err == nil || !strings.Contains(err.Error(), `s3 bucket "missing-bucket" does not exist`) {
		t.Fatalf("missing bucket: %v", err)
	}
	if _, err := Open(ctx, Options{URL: "s3://created-bucket?create=true&endpoint=" + srv.Endpoint}); err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Client(t).BucketExists(ctx, "created-bucket"); err != nil || !ok {
		t.Fatalf("create=true: exists=%v %v", ok, err)
	}

	// Wrong credentials from the options win over the environment and fail.
	_, err = Open(ctx, Options{URL: "s3://" + bucket + "?endpoint=" + srv.Endpoint, AccessKey: "nobody", SecretKey: "wrong"})
	if err == nil || !strings.Contains(err.Error(), bucket) {
		t.Fatalf("wrong credentials: %v", err)
	}
}

// An unreachable S3 says so with ErrUnavailable, which the receiver turns
// into a retry later rather than a failure.
func TestS3Unavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4("k", "s", ""), Region: "us-east-1", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := &S3{client: client, core: minio.Core{Client: client}, bucket: "bucket"}
	ctx := context.Background()
	sum := strings.Repeat("a", 64)
	if _, err := s.Has(ctx, sum); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Has: %v", err)
	}
	if _, err := s.Open(ctx, sum); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Open: %v", err)
	}
	if _, _, err := s.Put(ctx, strings.NewReader("x"), "", 1); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put: %v", err)
	}
	if _, err := s.Upload(ctx, "id", sum, 1, 0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Upload: %v", err)
	}
	if err := transient(minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}); errors.Is(err, ErrUnavailable) {
		t.Errorf("access denied marked transient: %v", err)
	}
}
