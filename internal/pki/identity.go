package pki

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Scheme is the URI scheme of every livedump identity in a certificate SAN.
const Scheme = "livedump"

// Role is an operator's permission level. Roles are ordered: an admin may do
// everything an operator may, an operator everything a viewer may.
type Role string

// The operator roles, from least to most privileged.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

var roleRank = map[Role]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// ParseRole returns the role named s, or an error naming the accepted roles.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if _, ok := roleRank[r]; !ok {
		return "", fmt.Errorf("role %q: must be one of viewer, operator, admin", s)
	}
	return r, nil
}

// Allows reports whether a holder of r may perform an action that requires min.
func (r Role) Allows(min Role) bool {
	have, ok := roleRank[r]
	need, known := roleRank[min]
	// An unknown requirement allows nobody: a rule written without a role
	// must fail closed.
	return ok && known && have >= need
}

// Kind says which side of the system a certificate belongs to.
type Kind int

// The identity kinds.
const (
	KindAgent Kind = iota + 1
	KindOperator
)

// Identity is who a peer is, as proven by its certificate's URI SAN.
type Identity struct {
	Kind    Kind
	AgentID string // KindAgent only
	Role    Role   // KindOperator only
	Name    string // KindOperator only
}

// String renders the identity the way the audit log records actors:
// "agent/<id>" or "operator/<role>/<name>".
func (i Identity) String() string {
	switch i.Kind {
	case KindAgent:
		return "agent/" + i.AgentID
	case KindOperator:
		return "operator/" + string(i.Role) + "/" + i.Name
	default:
		return "anonymous"
	}
}

// URI returns the SAN URI that encodes the identity.
func (i Identity) URI() *url.URL {
	switch i.Kind {
	case KindAgent:
		return &url.URL{Scheme: Scheme, Host: "agent", Path: "/" + i.AgentID}
	case KindOperator:
		return &url.URL{Scheme: Scheme, Host: "operator", Path: "/" + string(i.Role) + "/" + i.Name}
	}
	return nil
}

// AgentIdentity is the identity of agent id.
func AgentIdentity(id string) Identity { return Identity{Kind: KindAgent, AgentID: id} }

// OperatorIdentity is the identity of operator name holding role.
func OperatorIdentity(role Role, name string) Identity {
	return Identity{Kind: KindOperator, Role: role, Name: name}
}

var (
	agentIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$`)
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
)

// ValidateAgentID checks an agent ID against the allow-list: lower-case
// letters, digits and dashes, 2-64 characters. IDs reach paths and logs, so
// nothing else is accepted.
func ValidateAgentID(id string) error {
	if !agentIDRe.MatchString(id) {
		return fmt.Errorf("agent id %q: must be 2-64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", id)
	}
	return nil
}

// ValidateOperatorName checks an operator name: letters, digits, '.', '_',
// '@' and '-', 1-64 characters, starting with a letter or digit.
func ValidateOperatorName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("operator name %q: must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'", name)
	}
	return nil
}

// Validate checks that the identity is well formed.
func (i Identity) Validate() error {
	switch i.Kind {
	case KindAgent:
		return ValidateAgentID(i.AgentID)
	case KindOperator:
		if _, err := ParseRole(string(i.Role)); err != nil {
			return err
		}
		return ValidateOperatorName(i.Name)
	}
	return fmt.Errorf("identity: unknown kind %d", i.Kind)
}

// ParseIdentityURI parses a livedump:// SAN URI.
func ParseIdentityURI(u *url.URL) (Identity, error) {
	if u.Scheme != Scheme {
		return Identity{}, fmt.Errorf("identity uri %q: scheme is not %s", u, Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return Identity{}, fmt.Errorf("identity uri %q: unexpected userinfo, port, query or fragment", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	var id Identity
	switch {
	case u.Host == "agent" && len(parts) == 1:
		id = AgentIdentity(parts[0])
	case u.Host == "operator" && len(parts) == 2:
		id = OperatorIdentity(Role(parts[0]), parts[1])
	default:
		return Identity{}, fmt.Errorf("identity uri %q: want livedump://agent/<id> or livedump://operator/<role>/<name>", u)
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity uri %q: %w", u, err)
	}
	return id, nil
}

// IdentityFromCert extracts the single livedump identity from a certificate.
// A certificate with no livedump URI SAN, or more than one, has no identity.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == Scheme {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q has no %s:// URI SAN", cert.Subject.CommonName, Scheme)
	case 1:
		return ParseIdentityURI(found[0])
	default:
		return Identity{}, fmt.Errorf("certificate %q has %d %s:// URI SANs, want exactly one", cert.Subject.CommonName, len(found), Scheme)
	}
}
