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
	cert, err := signerCert(p16)
	if err != nil {
		return Signature{}, fmt.Errorf("%s: the signature is valid but its signer cannot be read: %w", path, err)
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
func signerCert(p16 *uint16) (*x509.Certificate, error) {
	var encoding, contentType, formatType uint32
	var store, msg windows.Handle
	err := windows.CryptQueryObject(windows.CERT_QUERY_OBJECT_FILE, unsafe.Pointer(p16),
		windows.CERT_QUERY_CONTENT_FLAG_PKCS7_SIGNED_EMBED, windows.CERT_QUERY_FORMAT_FLAG_BINARY, 0,
		&encoding, &contentType, &formatType, &store, &msg, nil)
	if err != nil {
		return nil, fmt.Errorf("CryptQueryObject: %w", err)
	}
	defer windows.CertCloseStore(store, 0)
	defer procCryptMsgClose.Call(uintptr(msg))

	var size uint32
	if r, _, e := procCryptMsgGetParam.Call(uintptr(msg), cmsgSignerCertInfoParam, 0, 0, uintptr(unsafe.Pointer(&size))); r == 0 {
		return nil, fmt.Errorf("CryptMsgGetParam: %w", e)
	}
	if size < uint32(unsafe.Sizeof(windows.CertInfo{})) || size > 1<<20 {
		return nil, fmt.Errorf("CryptMsgGetParam: unexpected signer info size %d", size)
	}
	// uint64 elements keep the CERT_INFO aligned; its blobs point into
	// the same buffer, which the Go heap does not move.
	buf := make([]uint64, (size+7)/8)
	if r, _, e := procCryptMsgGetParam.Call(uintptr(msg), cmsgSignerCertInfoParam, 0, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size))); r == 0 {
		return nil, fmt.Errorf("CryptMsgGetParam: %w", e)
	}
	info := (*windows.CertInfo)(unsafe.Pointer(&buf[0]))
	ctx, err := windows.CertFindCertificateInStore(store, encoding, 0, windows.CERT_FIND_SUBJECT_CERT, unsafe.Pointer(info), nil)
	runtime.KeepAlive(buf)
	if err != nil {
		return nil, fmt.Errorf("CertFindCertificateInStore: %w", err)
	}
	defer windows.CertFreeCertificateContext(ctx)
	der := make([]byte, ctx.Length)
	copy(der, unsafe.Slice(ctx.EncodedCert, ctx.Length))
	return x509.ParseCertificate(der)
}
