//go:build windows

package host

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// CryptMsgGetParam and CryptMsgClose are not in x/sys/windows.
var (
	modcrypt32           = windows.NewLazySystemDLL("crypt32.dll")
	procCryptMsgGetParam = modcrypt32.NewProc("CryptMsgGetParam")
	procCryptMsgClose    = modcrypt32.NewProc("CryptMsgClose")
)

// cmsgSignerCertInfoParam is CMSG_SIGNER_CERT_INFO_PARAM: the issuer and
// serial number of a signer, as a CERT_INFO.
const cmsgSignerCertInfoParam = 7

// VerifySignature runs WinVerifyTrust (WINTRUST_ACTION_GENERIC_VERIFY_V2,
// no UI) on the file and, when the signature is valid, reads the leaf
// signing certificate's subject.
//
// Revocation policy: every certificate of the chain except the root is
// checked for revocation (WTD_REVOKE_WHOLECHAIN with
// WTD_REVOCATION_CHECK_CHAIN_EXCLUDE_ROOT), fetching CRLs or OCSP answers
// over the network when the local cache has none. A certificate that is
// revoked, and one whose revocation status cannot be learned (a machine
// with no route to the CRL: CERT_E_REVOCATION_FAILURE), make the signature
// not valid: the agent fails closed. Machines that cannot reach the
// certificate authorities install by SHA-256 instead (installer_sha256).
// MD2 and MD4 signatures are refused (WTD_DISABLE_MD2_MD4).
func (*Windows) VerifySignature(ctx context.Context, path string) (Signature, error) {
	if err := ctx.Err(); err != nil {
		return Signature{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Signature{}, err
	}
	if !fi.Mode().IsRegular() {
		return Signature{}, fmt.Errorf("%s: not a regular file", path)
	}
	p16, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return Signature{}, err
	}
	file := &windows.WinTrustFileInfo{Size: uint32(unsafe.Sizeof(windows.WinTrustFileInfo{})), FilePath: p16}
	data := &windows.WinTrustData{
		Size:                            uint32(unsafe.Sizeof(windows.WinTrustData{})),
		UIChoice:                        windows.WTD_UI_NONE,
		RevocationChecks:                windows.WTD_REVOKE_WHOLECHAIN,
		UnionChoice:                     windows.WTD_CHOICE_FILE,
		StateAction:                     windows.WTD_STATEACTION_VERIFY,
		FileOrCatalogOrBlobOrSgnrOrCert: unsafe.Pointer(file),
		ProvFlags:                       windows.WTD_REVOCATION_CHECK_CHAIN_EXCLUDE_ROOT | windows.WTD_DISABLE_MD2_MD4,
	}
	verr := windows.WinVerifyTrustEx(windows.InvalidHWND, &windows.WINTRUST_ACTION_GENERIC_VERIFY_V2, data)
	data.StateAction = windows.WTD_STATEACTION_CLOSE
	_ = windows.WinVerifyTrustEx(windows.InvalidHWND, &windows.WINTRUST_ACTION_GENERIC_VERIFY_V2, data)
	runtime.KeepAlive(file)
	if verr != nil {
		var errno syscall.Errno
		if !errors.As(verr, &errno) {
			return Signature{}, fmt.Errorf("WinVerifyTrust %s: %w", path, verr)
		}
		return TrustResult(uint32(errno), errno.Error()), nil
	}
	cert, chainErr, err := signerCert(p16)
	if err != nil {
		return Signature{}, fmt.Errorf("%s: the signature is valid but its signer cannot be read: %w", path, err)
	}
	if chainErr != 0 {
		return TrustResult(chainErr, syscall.Errno(chainErr).Error()), nil
	}
	s := Signature{Signed: true, Valid: true, Publisher: cert.Subject.CommonName}
	if len(cert.Subject.Organization) > 0 {
		s.Organization = cert.Subject.Organization[0]
	}
	return s, nil
}

// signerCert returns the certificate of the file's (first) signer: the
// embedded PKCS #7 message names the signer by issuer and serial number,
// which find the certificate among those the message carries.
//
// It also checks the signer's chain once more, on its own, with the
// Authenticode chain policy (CertGetCertificateChain and
// CertVerifyCertificateChainPolicy, CERT_CHAIN_POLICY_AUTHENTICODE), and
// returns the policy's error code (0 when the chain is trusted). The
// publisher's name decides what runs as SYSTEM, and a name means nothing
// without a trusted chain: this second check holds even where a trust
// provider is lenient (Wine's WinVerifyTrust accepts a self-signed signer,
// which Windows refuses with CERT_E_UNTRUSTEDROOT).
func signerCert(p16 *uint16) (*x509.Certificate, uint32, error) {
	var encoding, contentType, formatType uint32
	var store, msg windows.Handle
	err := windows.CryptQueryObject(windows.CERT_QUERY_OBJECT_FILE, unsafe.Pointer(p16),
		windows.CERT_QUERY_CONTENT_FLAG_PKCS7_SIGNED_EMBED, windows.CERT_QUERY_FORMAT_FLAG_BINARY, 0,
		&encoding, &contentType, &formatType, &store, &msg, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("CryptQueryObject: %w", err)
	}
	defer windows.CertCloseStore(store, 0)
	defer procCryptMsgClose.Call(uintptr(msg))

	var size uint32
	if r, _, e := procCryptMsgGetParam.Call(uintptr(msg), cmsgSignerCertInfoParam, 0, 0, uintptr(unsafe.Pointer(&size))); r == 0 {
		return nil, 0, fmt.Errorf("CryptMsgGetParam: %w", e)
	}
	if size < uint32(unsafe.Sizeof(windows.CertInfo{})) || size > 1<<20 {
		return nil, 0, fmt.Errorf("CryptMsgGetParam: unexpected signer info size %d", size)
	}
	// uint64 elements keep the CERT_INFO aligned; its blobs point into
	// the same buffer, which the Go heap does not move.
	buf := make([]uint64, (size+7)/8)
	if r, _, e := procCryptMsgGetParam.Call(uintptr(msg), cmsgSignerCertInfoParam, 0, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size))); r == 0 {
		return nil, 0, fmt.Errorf("CryptMsgGetParam: %w", e)
	}
	info := (*windows.CertInfo)(unsafe.Pointer(&buf[0]))
	ctx, err := windows.CertFindCertificateInStore(store, encoding, 0, windows.CERT_FIND_SUBJECT_CERT, unsafe.Pointer(info), nil)
	runtime.KeepAlive(buf)
	if err != nil {
		return nil, 0, fmt.Errorf("CertFindCertificateInStore: %w", err)
	}
	defer windows.CertFreeCertificateContext(ctx)
	der := make([]byte, ctx.Length)
	copy(der, unsafe.Slice(ctx.EncodedCert, ctx.Length))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, 0, err
	}
	chainErr, err := chainPolicy(ctx, store)
	return cert, chainErr, err
}

// chainPolicy builds the chain of leaf, with the certificates the signature
// carries as extra candidates, and returns the Authenticode chain policy's
// verdict: 0, or an error such as CERT_E_UNTRUSTEDROOT. Revocation is not
// asked for again: WinVerifyTrust has just checked it for the whole chain.
func chainPolicy(leaf *windows.CertContext, extra windows.Handle) (uint32, error) {
	para := &windows.CertChainPara{Size: uint32(unsafe.Sizeof(windows.CertChainPara{}))}
	var chain *windows.CertChainContext
	if err := windows.CertGetCertificateChain(0, leaf, nil, extra, para, 0, 0, &chain); err != nil {
		return 0, fmt.Errorf("CertGetCertificateChain: %w", err)
	}
	defer windows.CertFreeCertificateChain(chain)
	ppara := &windows.CertChainPolicyPara{Size: uint32(unsafe.Sizeof(windows.CertChainPolicyPara{}))}
	st := &windows.CertChainPolicyStatus{Size: uint32(unsafe.Sizeof(windows.CertChainPolicyStatus{}))}
	if err := windows.CertVerifyCertificateChainPolicy(windows.CERT_CHAIN_POLICY_AUTHENTICODE, chain, ppara, st); err != nil {
		return 0, fmt.Errorf("CertVerifyCertificateChainPolicy: %w", err)
	}
	return st.Error, nil
}
