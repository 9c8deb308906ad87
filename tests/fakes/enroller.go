package fakes

import (
	"context"
	"crypto/x509"
	"sync"

	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/store"
)

// Enroller stands in for enroll.Enroller: it answers with what the test
// set, and records every request.
type Enroller struct {
	// Err, when set, is returned by every call.
	Err error
	// Enrollment is what Enroll returns.
	Enrollment enroll.Enrollment
	// Cert is what Renew returns.
	Cert *x509.Certificate
	// Token and Secret are what CreateToken returns.
	Token  store.Token
	Secret string

	mu       sync.Mutex
	enrolls  Log[enroll.EnrollRequest]
	renewals Log[AgentMsg[[]byte]]
	tokens   Log[enroll.TokenRequest]
}

// Enrolls returns the Enroll requests received.
func (f *Enroller) Enrolls() []enroll.EnrollRequest { return f.enrolls.All() }

// Renewals returns the agent and CSR of each Renew received.
func (f *Enroller) Renewals() []AgentMsg[[]byte] { return f.renewals.All() }

// TokenRequests returns the CreateToken requests received.
func (f *Enroller) TokenRequests() []enroll.TokenRequest { return f.tokens.All() }

// Enroll implements api.Enroller.
func (f *Enroller) Enroll(_ context.Context, req enroll.EnrollRequest) (enroll.Enrollment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolls.add(req)
	if f.Err != nil {
		return enroll.Enrollment{}, f.Err
	}
	return f.Enrollment, nil
}

// Renew implements api.Enroller.
func (f *Enroller) Renew(_ context.Context, agentID string, csr []byte) (*x509.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals.add(AgentMsg[[]byte]{agentID, csr})
	if f.Err != nil {
		return nil, f.Err
	}
	return f.Cert, nil
}

// CreateToken implements api.TokenIssuer.
func (f *Enroller) CreateToken(_ context.Context, req enroll.TokenRequest) (store.Token, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens.add(req)
	if f.Err != nil {
		return store.Token{}, "", f.Err
	}
	return f.Token, f.Secret, nil
}
