package blobstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Options say where blobs live.
type Options struct {
	// URL is one of
	//   file:///abs/dir
	//   s3://bucket[/prefix]?endpoint=https://host[:port][&region=R][&create=true]
	// Empty means the filesystem at Dir. Without an endpoint, S3 is AWS.
	// create=true creates a missing bucket, for tests and development.
	URL string
	// Dir is the filesystem store's directory when URL is empty.
	Dir string
	// AccessKey and SecretKey authenticate to S3; if empty they come from
	// $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY.
	AccessKey, SecretKey string
}

// Open returns the store opts describe.
func Open(ctx context.Context, opts Options) (Blobs, error) {
	if opts.URL == "" {
		if opts.Dir == "" {
			return nil, errors.New("blob store: neither a URL nor a directory given")
		}
		return New(opts.Dir)
	}
	u, err := url.Parse(opts.URL)
	if err != nil {
		// Not the whole error: it quotes the URL, which may hold a secret.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("blob store URL: %w", err)
	}
	switch u.Scheme {
	case "file":
		return openFile(u)
	case "s3":
		cfg, err := parseS3(u)
		if err != nil {
			return nil, err
		}
		cfg.AccessKey, cfg.SecretKey = opts.AccessKey, opts.SecretKey
		return NewS3(ctx, cfg)
	}
	return nil, fmt.Errorf("blob store URL %q: scheme must be file or s3", u.Redacted())
}

func openFile(u *url.URL) (*Store, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("blob store URL %q: a file URL has no host: file:///abs/dir", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("blob store URL %q: a file URL takes no query or fragment", u.Redacted())
	}
	if !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("blob store URL %q: the path must be absolute: file:///abs/dir", u.Redacted())
	}
	return New(filepath.FromSlash(u.Path))
}

// S3Config configures an S3 store.
type S3Config struct {
	Endpoint             string // http(s)://host[:port]
	Region               string // optional
	Bucket               string
	Prefix               string // optional; keys start with it
	AccessKey, SecretKey string // if empty, from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY
	Create               bool   // create the bucket if missing
}

const awsEndpoint = "https://s3.amazonaws.com"

var (
	// Bucket names as S3 allows them for new buckets, without dots: a
	// dotted name breaks TLS with virtual-host addressing.
	bucketRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)
	// Prefix segments are plain names; no "." or ".." that some servers
	// would resolve, no characters that need escaping.
	segmentRe = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)
	regionRe  = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
)

func parseS3(u *url.URL) (S3Config, error) {
	cfg := S3Config{Bucket: u.Host, Prefix: strings.TrimPrefix(u.Path, "/")}
	if u.User != nil {
		return cfg, fmt.Errorf("blob store URL %q: credentials do not belong in the URL; set the access and secret keys", u.Redacted())
	}
	if u.Fragment != "" {
		return cfg, fmt.Errorf("blob store URL %q: no fragment allowed", u.Redacted())
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("blob store URL %q: query: %w", u.Redacted(), err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return cfg, fmt.Errorf("blob store URL %q: %s given %d times", u.Redacted(), k, len(v))
		}
		switch k {
		case "endpoint":
			cfg.Endpoint = v[0]
		case "region":
			cfg.Region = v[0]
		case "create":
			switch v[0] {
			case "true":
				cfg.Create = true
			case "false":
			default:
				return cfg, fmt.Errorf("blob store URL %q: create=%q: want true or false", u.Redacted(), v[0])
			}
		default:
			return cfg, fmt.Errorf("blob store URL %q: unknown parameter %q (known: endpoint, region, create)", u.Redacted(), k)
		}
	}
	return cfg, nil
}

// check validates cfg and returns the endpoint's host and whether it uses
// TLS.
func (cfg *S3Config) check() (host string, secure bool, err error) {
	if !bucketRe.MatchString(cfg.Bucket) || strings.HasPrefix(cfg.Bucket, "xn--") {
		return "", false, fmt.Errorf("s3 bucket %q: want 3-63 lower-case letters, digits and -, starting and ending with a letter or digit", cfg.Bucket)
	}
	if p := strings.TrimSuffix(cfg.Prefix, "/"); p != "" {
		if len(p) > 512 {
			return "", false, fmt.Errorf("s3 prefix %q: longer than 512 characters", cfg.Prefix)
		}
		for _, seg := range strings.Split(p, "/") {
			if !segmentRe.MatchString(seg) {
				return "", false, fmt.Errorf("s3 prefix %q: segment %q: want letters, digits, ., _ and -, not starting with .", cfg.Prefix, seg)
			}
		}
		cfg.Prefix = p + "/"
	} else {
		cfg.Prefix = ""
	}
	if cfg.Region != "" && !regionRe.MatchString(cfg.Region) {
		return "", false, fmt.Errorf("s3 region %q: want lower-case letters, digits and -", cfg.Region)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = awsEndpoint
	}
	e, err := url.Parse(cfg.Endpoint)
	switch {
	case err != nil:
		return "", false, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
	case e.Scheme != "http" && e.Scheme != "https":
		return "", false, fmt.Errorf("s3 endpoint %q: want http://host[:port] or https://host[:port]", cfg.Endpoint)
	case e.Host == "" || e.User != nil || strings.Trim(e.Path, "/") != "" || e.RawQuery != "" || e.Fragment != "":
		return "", false, fmt.Errorf("s3 endpoint %q: want only a scheme, a host and a port", cfg.Endpoint)
	}
	if _, port, err := net.SplitHostPort(e.Host); err == nil && port == "" {
		return "", false, fmt.Errorf("s3 endpoint %q: empty port", cfg.Endpoint)
	}
	if cfg.AccessKey == "" && cfg.SecretKey == "" {
		cfg.AccessKey, cfg.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return "", false, errors.New("s3 credentials: give both an access key and a secret key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	return e.Host, e.Scheme == "https", nil
}

// NewS3 connects to a bucket, which must exist unless cfg.Create is set.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	host, secure, err := cfg.check()
	if err != nil {
		return nil, err
	}
	client, err := minio.New(host, &minio.Options{
		Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Secure: secure, Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %q at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok && !cfg.Create {
		return nil, fmt.Errorf("s3 bucket %q does not exist at %s", cfg.Bucket, cfg.Endpoint)
	}
	if !ok {
		if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("create s3 bucket %q at %s: %w", cfg.Bucket, cfg.Endpoint, err)
		}
	}
	return &S3{client: client, core: minio.Core{Client: client}, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}
