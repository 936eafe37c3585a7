// Package session keeps a signed-in browser's state in encrypted cookies.
//
// The state (state.go) is a typed struct, serialised in a compact binary
// form (encoding.go: JWTs are stored as their raw bytes, not their base64
// text, which saves a quarter of their size), encrypted and authenticated
// with AES-256-GCM (codec.go), and written as one cookie when it fits or as
// numbered parts when it does not (store.go), or kept in a server-side
// store with a ticket in the cookie (ticket.go).
package session

import "time"

// State is what a signed-in browser carries: the claims the check needs, the
// provider's tokens, and the times that decide when the session ends.
type State struct {
	// ID is extauth's own random session ID: a sign-out here records it as
	// ended, so a copy of the cookie stops passing too.
	ID                string
	Subject           string   // the ID token's sub
	User              string   // the claim named by oidc.claims.user (default: sub)
	Email             string   // empty when the provider marked it unverified
	PreferredUsername string   // preferred_username (or oidc.claims.preferredUsername)
	Groups            []string // groups (or oidc.claims.groups)
	SID               string   // the provider's session ID, for back-channel logout
	// Claims are the claims kept for claim rules (apps[].authorization.claims,
	// allowed_claims, oidc.claims.keep), each as its values in text.
	Claims map[string][]string

	// tokens are the provider's tokens; rawTokens their encoded form while
	// nobody has asked for them. The check never needs the tokens, so Load
	// leaves them encoded: re-encoding three JWTs as base64 would be a good
	// part of a check's cost.
	tokens    Tokens
	rawTokens []byte

	// AccessExpiry is when the access token expires by our clock; zero when the
	// provider did not say.
	AccessExpiry time.Time
	// AccessLifetime is how long the access token was issued for (whole
	// seconds); zero when unknown. It caps the refresh margin, so that a
	// token shorter-lived than session.refreshBefore is not refreshed on
	// every check.
	AccessLifetime time.Duration
	// ClaimsFromUserinfo says that sign-in took claims from the userinfo
	// endpoint (the ID token lacked them): a refresh reads them there again.
	ClaimsFromUserinfo bool
	// CreatedAt is the sign-in time (kept to the millisecond); a
	// back-channel logout ends only sessions created before it.
	CreatedAt time.Time
	// IDTokenApart says the ID token is not in this state but in a cookie
	// of its own (<name>_id), set once at sign-in: a session too large for
	// one cookie keeps what a refresh changes in one cookie, so that the
	// refresh travels in the check's single Set-Cookie. See Store.Seal.
	IDTokenApart bool
	// ExpiresAt is the absolute end of the session (sign-in + session.maxAge),
	// checked with our clock: the cookie's own expiry is only a hint to the browser.
	ExpiresAt time.Time

	// ticket names a session kept in a TicketStore; nil in the cookie store.
	// Not encoded: it comes from the cookie.
	ticket *ticket
}

// Tokens are the provider's tokens a session keeps (per session.storeTokens).
type Tokens struct {
	AccessToken  string
	IDToken      string
	RefreshToken string
}

// Tokens returns the session's tokens, decoded from their encoded form on
// every call rather than cached: a refreshed State is shared by every check
// that waited for the refresh, so reading it must never write it. (Only
// SetTokens changes a State, on one nobody else holds yet.)
func (s *State) Tokens() Tokens {
	if s.rawTokens == nil {
		return s.tokens
	}
	d := decoder{b: s.rawTokens}
	var t Tokens
	t.AccessToken, t.IDToken, t.RefreshToken = d.tokens()
	return t
}

// RefreshToken is Tokens().RefreshToken without decoding the other two:
// the check needs only this one to look up a shared refresh.
func (s *State) RefreshToken() string {
	if s.rawTokens == nil {
		return s.tokens.RefreshToken
	}
	d := decoder{b: s.rawTokens}
	return d.oneToken(2)
}

// SetTokens replaces the session's tokens.
func (s *State) SetTokens(t Tokens) {
	s.tokens, s.rawTokens = t, nil
}

// Expired reports whether the session's absolute lifetime is over at now.
func (s *State) Expired(now time.Time) bool {
	return !now.Before(s.ExpiresAt)
}
