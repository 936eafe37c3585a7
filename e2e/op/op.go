// Package op runs a real OpenID Connect provider on 127.0.0.1 for the
// end-to-end tests: the example OpenID provider of github.com/zitadel/oidc/v3
// (its in-memory storage, example/server/storage, and its login page), with
//
//   - one confidential web client (code flow, refresh_token grant,
//     client_secret_basic or client_secret_post) with the configured redirect
//     and post-logout redirect URIs;
//   - one static user (Username, Password);
//   - a configurable access token lifetime (expires_in equals it);
//   - refresh token rotation: redeeming a refresh token returns a new one and
//     the old one then gets invalid_grant; so does a revoked one;
//   - a provider session: after a login the browser gets the SessionCookie
//     cookie, and later authorization requests from it complete without the
//     login form until end_session ends the session.
//
// The issuer is "http://127.0.0.1:<port>" with no trailing slash; the
// discovery document's "issuer" is exactly that string.
//
// Endpoints (also in the discovery document): /authorize, /oauth/token,
// /userinfo, /revoke, /end_session, /keys, /oauth/introspect. The login page
// is GET /login/username?authRequestID=<id>; its form POSTs the fields id
// (hidden), username and password to /login/username.
//
// Logging: this package logs nothing. The zitadel op package logs protocol
// errors (e.g. invalid_grant) through slog.Default; its logger options are
// no-ops in v3.52.0, so only slog.SetDefault silences it.
package op

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Config configures Start.
type Config struct {
	// Addr is the listen address; it must be 127.0.0.1:<port> (port 0 picks
	// a free port). Empty means 127.0.0.1:0.
	Addr string
	// ClientID and ClientSecret register a confidential web client (code
	// flow, refresh_token grant, client_secret_basic; client_secret_post
	// works too). Both are required.
	ClientID, ClientSecret string
	// RedirectURIs are the client's registered redirect URIs (exact match;
	// at least one).
	RedirectURIs []string
	// PostLogoutRedirectURIs are the client's registered post-logout
	// redirect URIs (exact match). end_session with any other
	// post_logout_redirect_uri answers 400.
	PostLogoutRedirectURIs []string
	// AccessTokenTTL is the access token lifetime (0 means 5 minutes, the
	// example's). Use whole seconds: the token endpoint's expires_in is in
	// seconds. After it, userinfo and introspection refuse the token.
	AccessTokenTTL time.Duration
}

// Provider is a running OpenID provider.
type Provider struct {
	issuer     string
	server     *http.Server
	mux        *http.ServeMux
	sessions   *sessionStore
	tokenPath  string
	endSession string

	closeOnce sync.Once
	closeErr  error

	mu            sync.Mutex
	tokenRequests map[string]int
	endSessions   atomic.Int64
}

// Start starts a provider listening on cfg.Addr (127.0.0.1 only) and serving
// in the background until Close.
func Start(cfg Config) (*Provider, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := CheckAddr(addr); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("op: ClientID and ClientSecret are required")
	}
	if len(cfg.RedirectURIs) == 0 {
		return nil, errors.New("op: at least one redirect URI is required")
	}
	ttl := cfg.AccessTokenTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	if ttl < 0 {
		return nil, fmt.Errorf("op: negative AccessTokenTTL %v", ttl)
	}

	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("op: %w", err)
	}
	p := &Provider{
		issuer:        "http://" + ln.Addr().String(),
		sessions:      &sessionStore{m: map[string]session{}},
		tokenRequests: map[string]int{},
	}
	users := newUserStore()
	stor := &opStorage{
		// No clients in the example's map: GetClientByClientID and
		// AuthorizeClientIDSecret are overridden to know only ours.
		Storage: storage.NewStorageWithClients(users, map[string]*storage.Client{}),
		client: &webClient{
			id:                     cfg.ClientID,
			secret:                 cfg.ClientSecret,
			redirectURIs:           cfg.RedirectURIs,
			postLogoutRedirectURIs: cfg.PostLogoutRedirectURIs,
		},
		ttl:          ttl,
		p:            p,
		accessExpiry: map[string]time.Time{},
	}

	var key [32]byte
	rand.Read(key[:])
	// As in exampleop.newOP, minus device flow, private_key_jwt, request
	// objects and the custom /auth path. exampleop.SetupServer itself is not
	// used: it replaces the process-wide slog default and log.Fatal()s.
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:                key,
		CryptoKeyId:              "key1",
		DefaultLogoutRedirectURI: loggedOutPath,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
		SupportedUILocales:       []language.Tag{language.English},
	}, stor, op.StaticIssuer(p.issuer), op.WithAllowInsecure())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("op: %w", err)
	}
	p.tokenPath = provider.TokenEndpoint().Relative()
	p.endSession = provider.EndSessionEndpoint().Relative()

	login := &loginUI{
		store:    stor,
		users:    users,
		sessions: p.sessions,
		callback: op.AuthCallbackURL(provider),
	}
	p.mux = http.NewServeMux()
	p.mux.Handle(loginPath, op.NewIssuerInterceptor(provider.IssuerFromRequest).Handler(login))
	p.mux.HandleFunc(loggedOutPath, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "signed out successfully")
	})
	p.mux.Handle("/", provider)

	p.server = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go p.server.Serve(ln)
	return p, nil
}

// loggedOutPath is where end_session redirects without a
// post_logout_redirect_uri (as in the example).
const loggedOutPath = "/logged-out"

// CheckAddr reports an error unless addr is 127.0.0.1:<port>.
func CheckAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("op: bad listen address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("op: listen address %q is not on 127.0.0.1", addr)
	}
	return nil
}

// ServeHTTP counts token requests and marks end_session requests, then
// serves the request with the login page or the op package's handler.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case p.tokenPath:
		if r.Method == http.MethodPost {
			// ParseForm keeps r.PostForm for the op handler, which calls
			// ParseForm again (a no-op then).
			r.ParseForm()
			p.mu.Lock()
			p.tokenRequests[r.PostForm.Get("grant_type")]++
			p.mu.Unlock()
		}
	case p.endSession:
		st := &endSessionState{w: w}
		if c, err := r.Cookie(SessionCookie); err == nil {
			st.sessionID = c.Value
		}
		r = r.WithContext(context.WithValue(r.Context(), endSessionKey{}, st))
	}
	p.mux.ServeHTTP(w, r)
}

// Issuer is the issuer URL, "http://127.0.0.1:<port>" without a trailing
// slash, exactly as in the discovery document.
func (p *Provider) Issuer() string { return p.issuer }

// Close stops the server at once.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() { p.closeErr = p.server.Close() })
	return p.closeErr
}

// TokenRequests is the number of POSTs to the token endpoint with that
// grant_type ("authorization_code", "refresh_token"), successful or not.
func (p *Provider) TokenRequests(grantType string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenRequests[grantType]
}

// EndSessions is the number of end_session calls that ended a provider
// session: valid requests (a 302 to the post-logout redirect URI) whose
// browser had a live session cookie.
func (p *Provider) EndSessions() int { return int(p.endSessions.Load()) }
