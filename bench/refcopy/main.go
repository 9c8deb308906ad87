// Command refcopy is the reference pipeline bench/dumps.sh measures the
// verified dump upload against: a plain copy of one file over loopback
// mutual TLS 1.3, with SHA-256 on both ends. The sender reads the file and
// hashes it as it sends; the receiver hashes what arrives, writes it to a
// file, fsyncs it and compares the two hashes, as the controller does with
// an upload (it checks the agent's hash once the content is durable). Both
// ends run in this one process, on their own goroutines and TCP ends.
//
//	go run ./bench/refcopy -in DUMP -out COPY
//
// prints the size, the seconds and the MiB/s, one line, and removes COPY.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"time"
)

func main() {
	in := flag.String("in", "", "file to copy")
	out := flag.String("out", "", "where the receiver writes the copy (removed at the end)")
	bufSize := flag.Int("buf", 1<<20, "read and write size of both ends")
	keep := flag.Bool("keep", false, "keep the copy")
	noSync := flag.Bool("nosync", false, "do not fsync the copy (to see what the disk costs)")
	flag.Parse()
	if *in == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	size, secs, err := run(*in, *out, *bufSize, !*noSync)
	if !*keep {
		os.Remove(*out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "refcopy:", err)
		os.Exit(1)
	}
	fmt.Printf("%d bytes %.3f s %.1f MiB/s\n", size, secs, float64(size)/(1<<20)/secs)
}

// tlsConfigs returns a server and a client configuration that authenticate
// each other with one throwaway ECDSA P-256 certificate (as the agents' and
// the controller's), TLS 1.3 only.
func tlsConfigs() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "refcopy"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	return server, client, nil
}

type result struct {
	sum []byte
	n   int64
	err error
}

func run(in, out string, bufSize int, sync bool) (int64, float64, error) {
	scfg, ccfg, err := tlsConfigs()
	if err != nil {
		return 0, 0, err
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	src, err := os.Open(in)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()

	start := time.Now()
	recv := make(chan result, 1)
	go func() { recv <- receive(l, out, bufSize, sync) }()
	sent := send(l.Addr().String(), ccfg, src, bufSize)
	got := <-recv
	secs := time.Since(start).Seconds()
	switch {
	case sent.err != nil:
		return 0, 0, fmt.Errorf("send: %w", sent.err)
	case got.err != nil:
		return 0, 0, fmt.Errorf("receive: %w", got.err)
	case got.n != sent.n || !bytes.Equal(got.sum, sent.sum):
		return 0, 0, fmt.Errorf("copy differs: sent %d bytes %x, received %d bytes %x", sent.n, sent.sum, got.n, got.sum)
	}
	return got.n, secs, nil
}

// send reads src, hashes it and writes it to a TLS connection.
func send(addr string, cfg *tls.Config, src io.Reader, bufSize int) result {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return result{err: err}
	}
	defer c.Close()
	sum, n, err := pump(c, src, bufSize)
	if err != nil {
		return result{err: err}
	}
	if err := c.CloseWrite(); err != nil {
		return result{err: err}
	}
	// Wait for the receiver to be done (it closes after its fsync).
	_, _ = io.Copy(io.Discard, c)
	return result{sum: sum, n: n}
}

// receive accepts one connection, hashes and writes what arrives to out,
// and fsyncs it.
func receive(l net.Listener, out string, bufSize int, sync bool) result {
	c, err := l.Accept()
	if err != nil {
		return result{err: err}
	}
	defer c.Close()
	f, err := os.Create(out)
	if err != nil {
		return result{err: err}
	}
	defer f.Close()
	sum, n, err := pump(f, c, bufSize)
	if err != nil {
		return result{err: err}
	}
	if sync {
		if err := f.Sync(); err != nil {
			return result{err: err}
		}
	}
	return result{sum: sum, n: n}
}

// pump copies src to dst in full bufSize blocks (the last may be short),
// hashing what passes, and returns the SHA-256 and the byte count.
func pump(dst io.Writer, src io.Reader, bufSize int) ([]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, bufSize)
	var n int64
	for {
		k, err := io.ReadFull(src, buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return nil, n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return h.Sum(nil), n, nil
		}
		if err != nil {
			return nil, n, err
		}
	}
}
