package op

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// The static test user (the only one the provider knows).
const (
	Username = "test-user"
	Password = "verysecure"
	// Subject is the user's "sub" claim.
	Subject = "test-user-id"
	// Email is the user's e-mail address. Like the example provider, it is
	// only in the userinfo answer (scope email), never in the ID token.
	Email = "test-user@example.com"
	// Name is the user's "name" claim (scope profile); the preferred_username
	// claim is Username.
	Name = "Test User"
)

// expiresInSlack is added to the expiry handed to the op package, which
// computes expires_in as the truncated whole seconds left at the time it
// builds the response (now+TTL would give TTL-1). The provider itself still
// expires the access token at now+TTL (see userinfo/introspection below).
const expiresInSlack = 500 * time.Millisecond

// userStore implements storage.UserStore with the single test user.
type userStore struct{ user *storage.User }

func newUserStore() userStore {
	return userStore{user: &storage.User{
		ID:                Subject,
		Username:          Username,
		Password:          Password,
		FirstName:         "Test",
		LastName:          "User",
		Email:             Email,
		EmailVerified:     true,
		PreferredLanguage: language.English,
	}}
}

func (u userStore) GetUserByID(id string) *storage.User {
	if id == u.user.ID {
		return u.user
	}
	return nil
}

func (u userStore) GetUserByUsername(username string) *storage.User {
	if username == u.user.Username {
		return u.user
	}
	return nil
}

func (u userStore) ExampleClientID() string { return storage.ServiceUserID }

// webClient is the confidential web client registered by Config. The
// example's storage.Client cannot be used: its fields are unexported and it
// registers no post-logout redirect URIs.
type webClient struct {
	id, secret             string
	redirectURIs           []string
	postLogoutRedirectURIs []string
}

var _ op.Client = (*webClient)(nil)

func (c *webClient) GetID() string                       { return c.id }
func (c *webClient) RedirectURIs() []string              { return slices.Clone(c.redirectURIs) }
func (c *webClient) PostLogoutRedirectURIs() []string    { return slices.Clone(c.postLogoutRedirectURIs) }
func (c *webClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }

// AuthMethod is client_secret_basic; client_secret_post is accepted as well
// (the op package checks the secret for both, and discovery advertises both).
func (c *webClient) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodBasic }
func (c *webClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

// GrantTypes allows refresh_token: with it, a code flow whose scope includes
// offline_access gets a refresh token.
func (c *webClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}
func (c *webClient) LoginURL(id string) string {
	return loginPath + "?" + url.Values{queryAuthRequestID: {id}}.Encode()
}
func (c *webClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *webClient) IDTokenLifetime() time.Duration      { return time.Hour }
func (c *webClient) DevMode() bool                       { return false }
func (c *webClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}
func (c *webClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}
func (c *webClient) IsScopeAllowed(string) bool           { return false }
func (c *webClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *webClient) ClockSkew() time.Duration             { return 0 }

// opStorage is the example's in-memory storage with our client, a
// configurable access token lifetime and a hook ending the provider session.
type opStorage struct {
	*storage.Storage
	client *webClient
	ttl    time.Duration
	p      *Provider

	mu           sync.Mutex
	accessExpiry map[string]time.Time // access token ID -> real expiry
}

func (s *opStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	if clientID == s.client.id {
		return s.client, nil
	}
	return nil, fmt.Errorf("client not found")
}

func (s *opStorage) AuthorizeClientIDSecret(ctx context.Context, clientID, clientSecret string) error {
	if clientID != s.client.id {
		return fmt.Errorf("client not found")
	}
	if subtle.ConstantTimeCompare([]byte(clientSecret), []byte(s.client.secret)) != 1 {
		return fmt.Errorf("invalid secret")
	}
	return nil
}

// expire records the real expiry of an access token and returns the one to
// hand to the op package (see expiresInSlack).
func (s *opStorage) expire(accessTokenID string) time.Time {
	now := time.Now()
	s.mu.Lock()
	s.accessExpiry[accessTokenID] = now.Add(s.ttl)
	s.mu.Unlock()
	return now.Add(s.ttl + expiresInSlack)
}

func (s *opStorage) expired(accessTokenID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.accessExpiry[accessTokenID]
	return ok && !time.Now().Before(exp)
}

// CreateAccessToken overrides the example's hard-coded 5 minutes.
func (s *opStorage) CreateAccessToken(ctx context.Context, request op.TokenRequest) (string, time.Time, error) {
	id, _, err := s.Storage.CreateAccessToken(ctx, request)
	if err != nil {
		return "", time.Time{}, err
	}
	return id, s.expire(id), nil
}

// CreateAccessAndRefreshTokens overrides the example's hard-coded 5 minutes.
// The example already rotates refresh tokens: redeeming one deletes it (and
// the access token issued with it) and issues a new one. A refresh token that
// vanished between lookup and rotation (concurrent use) is reported as
// invalid_grant rather than the server_error the example would produce.
func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, request op.TokenRequest, currentRefreshToken string) (string, string, time.Time, error) {
	id, refreshToken, _, err := s.Storage.CreateAccessAndRefreshTokens(ctx, request, currentRefreshToken)
	if err != nil {
		if currentRefreshToken != "" {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token invalid").WithParent(err)
		}
		return "", "", time.Time{}, err
	}
	return id, refreshToken, s.expire(id), nil
}

func (s *opStorage) SetUserinfoFromToken(ctx context.Context, userinfo *oidc.UserInfo, tokenID, subject, origin string) error {
	if s.expired(tokenID) {
		return errors.New("token is expired")
	}
	return s.Storage.SetUserinfoFromToken(ctx, userinfo, tokenID, subject, origin)
}

func (s *opStorage) SetIntrospectionFromToken(ctx context.Context, introspection *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	if s.expired(tokenID) {
		return errors.New("token is expired")
	}
	return s.Storage.SetIntrospectionFromToken(ctx, introspection, tokenID, subject, clientID)
}

// GetRefreshTokenInfo replaces the example's version, which reads its token
// map without holding its lock.
func (s *opStorage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (userID, tokenID string, err error) {
	req, err := s.Storage.TokenRequestByRefreshToken(ctx, token)
	if err != nil {
		return "", "", op.ErrInvalidRefreshToken
	}
	rt, ok := req.(*storage.RefreshTokenRequest)
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.UserID, rt.ID, nil
}

// endSessionKey marks the context of an end_session request, so that
// TerminateSession (called by the op package once the request is valid, just
// before it redirects) can end the browser's provider session.
type endSessionKey struct{}

type endSessionState struct {
	w         http.ResponseWriter
	sessionID string // value of the session cookie, "" if none
}

// TerminateSession is called by the end_session endpoint after it validated
// the request. Besides the example's behaviour (drop the user's tokens for
// the client), it ends the provider session named by the request's cookie and
// clears the cookie.
func (s *opStorage) TerminateSession(ctx context.Context, userID, clientID string) error {
	if err := s.Storage.TerminateSession(ctx, userID, clientID); err != nil {
		return err
	}
	if st, ok := ctx.Value(endSessionKey{}).(*endSessionState); ok {
		http.SetCookie(st.w, &http.Cookie{
			Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, SameSite: http.SameSiteLaxMode,
		})
		if st.sessionID != "" && s.p.sessions.remove(st.sessionID) {
			s.p.endSessions.Add(1)
		}
	}
	return nil
}
