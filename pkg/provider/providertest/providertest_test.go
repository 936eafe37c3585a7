package providertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/pkg/provider/providertest"
)

const callback = "https://app.example.com/oauth2/callback"

// rp is a relying party built from go-oidc and x/oauth2 against the fake.
type rp struct {
	p    *providertest.Provider
	ctx  context.Context
	op   *oidc.Provider
	conf *oauth2.Config
}

func newRP(t *testing.T, opts ...providertest.Option) *rp {
	t.Helper()
	p := providertest.New(t, opts...)
	ctx := oidc.ClientContext(t.Context(), p.Server.Client())
	op, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	endpoint := op.Endpoint()
	endpoint.AuthStyle = oauth2.AuthStyleInHeader // no auto-detect retries
	return &rp{p: p, ctx: ctx, op: op, conf: &oauth2.Config{
		ClientID:     p.ClientID,
		ClientSecret: p.ClientSecret,
		Endpoint:     endpoint,
		RedirectURL:  callback,
		Scopes:       []string{oidc.ScopeOpenID, "email", "profile"},
	}}
}

func (r *rp) verifier() *oidc.IDTokenVerifier {
	return r.op.Verifier(&oidc.Config{ClientID: r.p.ClientID, Now: r.p.Now})
}

// authorize runs the browser leg and returns the code and the PKCE verifier.
func (r *rp) authorize(t *testing.T, nonce string) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	cb := r.p.Login(t, r.ctx, r.conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
	q := cb.Query()
	if got := cb.Scheme + "://" + cb.Host + cb.Path; got != callback {
		t.Fatalf("redirected to %q, want %q", got, callback)
	}
	if q.Get("state") != "st4te" || q.Get("iss") != r.p.Issuer || q.Get("code") == "" {
		t.Fatalf("callback query = %v", q)
	}
	return q.Get("code"), verifier
}

// signIn runs the full code flow.
func (r *rp) signIn(t *testing.T) *oauth2.Token {
	t.Helper()
	code, verifier := r.authorize(t, "n0nce")
	tok, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

func (r *rp) refresh(refreshToken string) (*oauth2.Token, error) {
	return r.conf.TokenSource(r.ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
}

func idToken(t *testing.T, tok *oauth2.Token) string {
	t.Helper()
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("token response has no id_token")
	}
	return raw
}

func wantOAuthError(t *testing.T, err error, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want an oauth2 %s error", err, code)
	}
	if re.ErrorCode != code {
		t.Fatalf("error code = %q (%s), want %q", re.ErrorCode, re.ErrorDescription, code)
	}
}

// postForm POSTs form to the endpoint, with Basic auth if user != "".
// answer is a response whose body has been read and closed.
type answer struct{ StatusCode int }

func postForm(t *testing.T, p *providertest.Provider, endpoint, user, pass string, form url.Values) (answer, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL(endpoint), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	resp, err := p.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return answer{resp.StatusCode}, m
}

func TestDiscovery(t *testing.T) {
	r := newRP(t)
	p := r.p
	if got := r.op.Endpoint().TokenURL; got != p.Issuer+"/token" {
		t.Errorf("token URL = %q", got)
	}
	if got := r.op.UserInfoEndpoint(); got != p.Issuer+"/userinfo" {
		t.Errorf("userinfo URL = %q", got)
	}
	var doc struct {
		Revocation      string   `json:"revocation_endpoint"`
		EndSession      string   `json:"end_session_endpoint"`
		Backchannel     bool     `json:"backchannel_logout_supported"`
		BackchannelSID  bool     `json:"backchannel_logout_session_supported"`
		PKCEMethods     []string `json:"code_challenge_methods_supported"`
		AuthMethods     []string `json:"token_endpoint_auth_methods_supported"`
		GrantTypes      []string `json:"grant_types_supported"`
		ResponseTypes   []string `json:"response_types_supported"`
		SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
		ScopesSupported []string `json:"scopes_supported"`
	}
	if err := r.op.Claims(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Revocation != p.Issuer+"/revoke" || doc.EndSession != p.Issuer+"/end_session" {
		t.Errorf("revocation/end_session = %q, %q", doc.Revocation, doc.EndSession)
	}
	if !doc.Backchannel || !doc.BackchannelSID {
		t.Error("back-channel logout not advertised")
	}
	if !slices.Equal(doc.PKCEMethods, []string{"S256"}) ||
		!slices.Equal(doc.AuthMethods, []string{"client_secret_basic", "client_secret_post"}) ||
		!slices.Equal(doc.GrantTypes, []string{"authorization_code", "refresh_token"}) ||
		!slices.Equal(doc.ResponseTypes, []string{"code"}) ||
		!slices.Equal(doc.SigningAlgs, []string{"RS256"}) ||
		!slices.Contains(doc.ScopesSupported, "offline_access") {
		t.Errorf("discovery document = %+v", doc)
	}
	if got := p.Calls(providertest.EndpointDiscovery); got != 1 {
		t.Errorf("discovery calls = %d, want 1", got)
	}

	bare := newRP(t, providertest.WithoutRevocation(), providertest.WithoutEndSession(),
		providertest.WithAuthMethods("client_secret_post"), providertest.WithCodeChallengeMethods("S256", "plain"))
	doc.Revocation, doc.EndSession = "", ""
	if err := bare.op.Claims(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Revocation != "" || doc.EndSession != "" {
		t.Errorf("disabled endpoints advertised: %q, %q", doc.Revocation, doc.EndSession)
	}
	if !slices.Equal(doc.AuthMethods, []string{"client_secret_post"}) || !slices.Equal(doc.PKCEMethods, []string{"S256", "plain"}) {
		t.Errorf("options not advertised: %+v", doc)
	}
	resp, _ := postForm(t, bare.p, providertest.EndpointRevoke, "", "", url.Values{"token": {"x"}})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("disabled revoke status = %d, want 404", resp.StatusCode)
	}
}

func TestCodeFlowWithPKCE(t *testing.T) {
	r := newRP(t)
	tok := r.signIn(t)
	raw := idToken(t, tok)
	if tok.RefreshToken == "" || tok.AccessToken == "" || tok.TokenType != "Bearer" {
		t.Fatalf("token = %+v", tok)
	}
	if tok.ExpiresIn != 3600 {
		t.Errorf("expires_in = %d, want 3600", tok.ExpiresIn)
	}

	idt, err := r.verifier().Verify(r.ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejects the ID token: %v", err)
	}
	if idt.Nonce != "n0nce" {
		t.Errorf("nonce = %q", idt.Nonce)
	}
	if !idt.IssuedAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !idt.Expiry.Equal(r.p.Now().Add(time.Hour)) {
		t.Errorf("iat/exp = %v/%v, not from the fake clock", idt.IssuedAt, idt.Expiry)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Errorf("at_hash: %v", err)
	}
	var claims struct {
		Email             string   `json:"email"`
		EmailVerified     bool     `json:"email_verified"`
		PreferredUsername string   `json:"preferred_username"`
		Name              string   `json:"name"`
		Groups            []string `json:"groups"`
		SID               string   `json:"sid"`
		AuthTime          int64    `json:"auth_time"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	u := providertest.DefaultUser()
	if idt.Subject != u.Subject || claims.Email != u.Email || !claims.EmailVerified ||
		claims.PreferredUsername != u.PreferredUsername || claims.Name != u.Name ||
		!slices.Equal(claims.Groups, u.Groups) || claims.SID == "" || claims.AuthTime != r.p.Now().Unix() {
		t.Errorf("claims = %+v sub=%q", claims, idt.Subject)
	}

	// The fake clock drives expiry: an hour later the token is expired.
	r.p.Advance(time.Hour + time.Second)
	var expired *oidc.TokenExpiredError
	if _, err := r.verifier().Verify(r.ctx, raw); !errors.As(err, &expired) {
		t.Errorf("after Advance, Verify error = %v, want TokenExpiredError", err)
	}
}

func TestCustomClockAndUser(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	user := providertest.User{Subject: "svc-42", Email: "bob@example.org", Extra: map[string]any{"tenant": "acme"}}
	r := newRP(t, providertest.WithClock(func() time.Time { return now }), providertest.WithUser(user))
	idt, err := r.verifier().Verify(r.ctx, idToken(t, r.signIn(t)))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	if idt.Subject != "svc-42" || claims["tenant"] != "acme" || claims["email_verified"] != false || !idt.IssuedAt.Equal(now) {
		t.Errorf("claims = %v", claims)
	}
	defer func() {
		if recover() == nil {
			t.Error("Advance with an injected clock did not panic")
		}
	}()
	r.p.Advance(time.Second)
}

func TestWrongVerifier(t *testing.T) {
	r := newRP(t)
	code, _ := r.authorize(t, "n")
	_, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantOAuthError(t, err, "invalid_grant")

	code, _ = r.authorize(t, "n")
	_, err = r.conf.Exchange(r.ctx, code) // challenge sent, verifier missing
	wantOAuthError(t, err, "invalid_grant")
}

func TestNoPKCEIsAllowedButThenNoVerifier(t *testing.T) {
	r := newRP(t)
	cb := r.p.Login(t, r.ctx, r.conf.AuthCodeURL("s"))
	if _, err := r.conf.Exchange(r.ctx, cb.Query().Get("code")); err != nil {
		t.Fatalf("exchange without PKCE: %v", err)
	}
	cb = r.p.Login(t, r.ctx, r.conf.AuthCodeURL("s"))
	_, err := r.conf.Exchange(r.ctx, cb.Query().Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantOAuthError(t, err, "invalid_grant")
}

func TestCodeReplayRevokesTokens(t *testing.T) {
	r := newRP(t)
	code, verifier := r.authorize(t, "n")
	tok, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if r.p.FamilyRevoked(tok.RefreshToken) {
		t.Fatal("family revoked before replay")
	}
	_, err = r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, "invalid_grant")
	if !r.p.FamilyRevoked(tok.RefreshToken) {
		t.Error("code replay did not revoke the tokens issued for the code")
	}
	_, err = r.refresh(tok.RefreshToken)
	wantOAuthError(t, err, "invalid_grant")
	if _, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Error("userinfo accepted an access token of a revoked sign-in")
	}
}

func TestCodeExpiryAndRedirectMismatch(t *testing.T) {
	r := newRP(t)
	code, verifier := r.authorize(t, "n")
	r.p.Advance(providertest.CodeTTL + time.Second)
	_, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, "invalid_grant")

	code, verifier = r.authorize(t, "n")
	other := *r.conf
	other.RedirectURL = "https://app.example.com/other"
	_, err = other.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, "invalid_grant")
}

func TestAuthorizeValidation(t *testing.T) {
	p := providertest.New(t, providertest.WithRedirectURIs(callback))
	type answer struct {
		StatusCode int
		location   *url.URL
	}
	get := func(q url.Values) answer {
		t.Helper()
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get(p.URL(providertest.EndpointAuthorize) + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Location()
		return answer{resp.StatusCode, loc}
	}
	good := func() url.Values {
		return url.Values{
			"client_id": {p.ClientID}, "redirect_uri": {callback}, "response_type": {"code"}, "scope": {"openid"},
			"state": {"xyz"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
			"code_challenge_method": {"S256"},
		}
	}
	for name, mutate := range map[string]func(url.Values){
		"unknown client":        func(q url.Values) { q.Set("client_id", "nope") },
		"unregistered redirect": func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") },
		"implicit flow":         func(q url.Values) { q.Set("response_type", "token") },
		"no openid scope":       func(q url.Values) { q.Set("scope", "email") },
		"plain PKCE":            func(q url.Values) { q.Set("code_challenge_method", "plain") },
		"PKCE method defaults":  func(q url.Values) { q.Del("code_challenge_method") },
	} {
		q := good()
		mutate(q)
		if resp := get(q); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, resp.StatusCode)
		}
	}
	if resp := get(good()); resp.StatusCode != http.StatusFound {
		t.Fatalf("valid request: status %d", resp.StatusCode)
	}

	p.AuthorizeError("access_denied")
	loc := get(good()).location
	if q := loc.Query(); q.Get("error") != "access_denied" || q.Get("state") != "xyz" || q.Has("code") {
		t.Errorf("AuthorizeError redirect = %v", loc)
	}
	loc = get(good()).location
	if q := loc.Query(); q.Has("error") || q.Get("code") == "" {
		t.Errorf("AuthorizeError was not one-shot: %v", loc)
	}
	if got := p.Calls(providertest.EndpointAuthorize); got != 9 {
		t.Errorf("authorize calls = %d, want 9", got)
	}
}

func TestRefreshRotationAndReuseDetection(t *testing.T) {
	r := newRP(t)
	first := r.signIn(t)
	firstID, err := r.verifier().Verify(r.ctx, idToken(t, first))
	if err != nil {
		t.Fatal(err)
	}
	r.p.Advance(30 * time.Minute)

	second, err := r.refresh(first.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken {
		t.Fatalf("refresh did not rotate: %q -> %q", first.RefreshToken, second.RefreshToken)
	}
	secondID, err := r.verifier().Verify(r.ctx, idToken(t, second))
	if err != nil {
		t.Fatalf("refreshed ID token: %v", err)
	}
	var sid1, sid2 struct {
		SID string `json:"sid"`
	}
	_ = firstID.Claims(&sid1)
	_ = secondID.Claims(&sid2)
	if secondID.Subject != firstID.Subject || sid2.SID != sid1.SID || secondID.Nonce != "" ||
		!secondID.IssuedAt.Equal(r.p.Now()) {
		t.Errorf("refreshed ID token sub=%q sid=%q nonce=%q iat=%v", secondID.Subject, sid2.SID, secondID.Nonce, secondID.IssuedAt)
	}

	// Replaying the rotated-away token revokes the whole family.
	_, err = r.refresh(first.RefreshToken)
	wantOAuthError(t, err, "invalid_grant")
	if !r.p.FamilyRevoked(first.RefreshToken) || !r.p.FamilyRevoked(second.RefreshToken) {
		t.Error("reuse did not revoke the family")
	}
	_, err = r.refresh(second.RefreshToken)
	wantOAuthError(t, err, "invalid_grant")

	// Another sign-in is a separate family.
	other := r.signIn(t)
	if r.p.FamilyRevoked(other.RefreshToken) {
		t.Error("revocation leaked into another family")
	}
	if _, err := r.refresh(other.RefreshToken); err != nil {
		t.Errorf("refresh in an unrelated family: %v", err)
	}
	_, err = r.refresh("never-issued")
	wantOAuthError(t, err, "invalid_grant")
	if got := r.p.TokenRequests(providertest.GrantRefreshToken); got != 5 {
		t.Errorf("refresh requests = %d, want 5", got)
	}
}

func TestRefreshTokenExpiry(t *testing.T) {
	r := newRP(t, providertest.WithRefreshTokenTTL(2*time.Hour))
	tok := r.signIn(t)
	r.p.Advance(2 * time.Hour)
	_, err := r.refresh(tok.RefreshToken)
	wantOAuthError(t, err, "invalid_grant")
}

func TestConcurrentRefreshOnlyOneWins(t *testing.T) {
	r := newRP(t)
	tok := r.signIn(t)
	const n = 20
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		wins, rejected  int
		unexpectedError error
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := r.refresh(tok.RefreshToken)
			var re *oauth2.RetrieveError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
				rejected++
			default:
				unexpectedError = err
			}
		})
	}
	close(start)
	wg.Wait()
	if unexpectedError != nil {
		t.Fatal(unexpectedError)
	}
	if wins != 1 || rejected != n-1 {
		t.Errorf("wins=%d rejected=%d, want 1 and %d", wins, rejected, n-1)
	}
	if !r.p.FamilyRevoked(tok.RefreshToken) {
		t.Error("concurrent reuse did not revoke the family")
	}
	if got := r.p.TokenRequests(providertest.GrantRefreshToken); got != n {
		t.Errorf("refresh requests = %d, want %d", got, n)
	}
}

func TestRefreshOptions(t *testing.T) {
	t.Run("without rotation", func(t *testing.T) {
		r := newRP(t, providertest.WithRotation(false), providertest.WithRefreshIDToken(false))
		tok := r.signIn(t)
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
		for i := range 2 {
			resp, body := postForm(t, r.p, providertest.EndpointToken, r.p.ClientID, r.p.ClientSecret, form)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("refresh %d: status %d %v", i, resp.StatusCode, body)
			}
			if _, ok := body["refresh_token"]; ok {
				t.Errorf("refresh %d returned a refresh_token without rotation", i)
			}
			if _, ok := body["id_token"]; ok {
				t.Errorf("refresh %d returned an id_token with WithRefreshIDToken(false)", i)
			}
			if body["access_token"] == "" || body["token_type"] != "Bearer" {
				t.Errorf("refresh %d body = %v", i, body)
			}
		}
		if r.p.FamilyRevoked(tok.RefreshToken) {
			t.Error("family revoked without rotation")
		}
	})
	t.Run("only with offline_access", func(t *testing.T) {
		r := newRP(t, providertest.WithRefreshTokens(false))
		if tok := r.signIn(t); tok.RefreshToken != "" {
			t.Error("refresh token issued without offline_access")
		}
		r.conf.Scopes = append(r.conf.Scopes, "offline_access")
		if tok := r.signIn(t); tok.RefreshToken == "" {
			t.Error("no refresh token with offline_access")
		}
	})
}

func TestClientAuthentication(t *testing.T) {
	r := newRP(t)
	bad := *r.conf
	bad.ClientSecret = "wrong"
	code, verifier := r.authorize(t, "n")
	_, err := bad.Exchange(r.ctx, code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, "invalid_client")
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401", re.Response.StatusCode)
	}
	// The code survives a failed client authentication.
	post := *r.conf
	post.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	if _, err := post.Exchange(r.ctx, code, oauth2.VerifierOption(verifier)); err != nil {
		t.Errorf("client_secret_post: %v", err)
	}

	onlyPost := newRP(t, providertest.WithAuthMethods("client_secret_post"))
	code, verifier = onlyPost.authorize(t, "n")
	_, err = onlyPost.conf.Exchange(onlyPost.ctx, code, oauth2.VerifierOption(verifier)) // Basic
	wantOAuthError(t, err, "invalid_client")

	public := newRP(t, providertest.WithClient("spa", ""))
	code, verifier = public.authorize(t, "n")
	public.conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tok, err := public.conf.Exchange(public.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("public client: %v", err)
	}
	idt, err := public.verifier().Verify(public.ctx, idToken(t, tok))
	if err != nil || idt.Audience[0] != "spa" {
		t.Errorf("public client ID token: %v %v", idt, err)
	}
}

func TestRevocation(t *testing.T) {
	r := newRP(t)
	p := r.p
	tok := r.signIn(t)

	resp, _ := postForm(t, p, providertest.EndpointRevoke, p.ClientID, "wrong", url.Values{"token": {tok.RefreshToken}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bad client auth: status %d, want 401", resp.StatusCode)
	}
	if p.FamilyRevoked(tok.RefreshToken) || len(p.Revocations()) != 0 {
		t.Fatal("unauthenticated revocation had an effect")
	}

	resp, _ = postForm(t, p, providertest.EndpointRevoke, "", "", url.Values{
		"token": {tok.AccessToken}, "token_type_hint": {"access_token"},
		"client_id": {p.ClientID}, "client_secret": {p.ClientSecret},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke access token: status %d", resp.StatusCode)
	}
	if _, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Error("revoked access token still works at userinfo")
	}
	if p.FamilyRevoked(tok.RefreshToken) {
		t.Error("revoking the access token revoked the refresh token")
	}

	resp, _ = postForm(t, p, providertest.EndpointRevoke, p.ClientID, p.ClientSecret, url.Values{
		"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke refresh token: status %d", resp.StatusCode)
	}
	if !p.FamilyRevoked(tok.RefreshToken) {
		t.Error("revoking the refresh token did not revoke its family")
	}
	_, err := r.refresh(tok.RefreshToken)
	wantOAuthError(t, err, "invalid_grant")

	resp, _ = postForm(t, p, providertest.EndpointRevoke, p.ClientID, p.ClientSecret, url.Values{"token": {"unknown"}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("unknown token: status %d, want 200", resp.StatusCode)
	}

	want := []providertest.Revocation{
		{Token: tok.AccessToken, TypeHint: "access_token", ClientID: p.ClientID, AuthMethod: "client_secret_post", Kind: "access_token"},
		{Token: tok.RefreshToken, TypeHint: "refresh_token", ClientID: p.ClientID, AuthMethod: "client_secret_basic", Kind: "refresh_token"},
		{Token: "unknown", ClientID: p.ClientID, AuthMethod: "client_secret_basic"},
	}
	if got := p.Revocations(); !slices.Equal(got, want) {
		t.Errorf("Revocations() =\n%+v\nwant\n%+v", got, want)
	}
	if got := p.Calls(providertest.EndpointRevoke); got != 4 {
		t.Errorf("revoke calls = %d, want 4", got)
	}
}

func TestUserinfo(t *testing.T) {
	r := newRP(t, providertest.WithAccessTokenTTL(5*time.Minute))
	tok := r.signIn(t)
	ui, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Groups []string `json:"groups"`
		Name   string   `json:"name"`
	}
	_ = ui.Claims(&claims)
	u := providertest.DefaultUser()
	if ui.Subject != u.Subject || ui.Email != u.Email || !ui.EmailVerified || claims.Name != u.Name || !slices.Equal(claims.Groups, u.Groups) {
		t.Errorf("userinfo = %+v %+v", ui, claims)
	}

	// A profile change of the same subject shows at userinfo.
	u.Groups = []string{"staff"}
	r.p.SetUser(u)
	r.p.SetUserinfoOverride(map[string]any{"sub": "someone-else", "name": nil})
	ui, err = r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	claims.Name = ""
	_ = ui.Claims(&claims)
	if ui.Subject != "someone-else" || claims.Name != "" || !slices.Equal(claims.Groups, []string{"staff"}) {
		t.Errorf("override not applied: %+v %+v", ui, claims)
	}

	r.p.Advance(5 * time.Minute)
	if _, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok)); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("expired access token: err = %v, want 401", err)
	}
	if got := r.p.Calls(providertest.EndpointUserinfo); got != 3 {
		t.Errorf("userinfo calls = %d, want 3", got)
	}
}

func TestClaimsOnlyInUserinfo(t *testing.T) {
	r := newRP(t, providertest.WithClaimsOnlyInUserinfo())
	tok := r.signIn(t)
	idt, err := r.verifier().Verify(r.ctx, idToken(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"aud", "exp", "iat", "iss", "nonce", "sid", "sub"}; !slices.Equal(keys, want) {
		t.Errorf("ID token claims = %v, want %v", keys, want)
	}
	ui, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok))
	if err != nil || ui.Email != providertest.DefaultUser().Email {
		t.Errorf("userinfo = %+v, %v", ui, err)
	}
}

func TestIDTokenTampering(t *testing.T) {
	r := newRP(t)
	verify := func() error {
		_, err := r.verifier().Verify(r.ctx, idToken(t, r.signIn(t)))
		return err
	}
	r.p.SetIDTokenMutator(func(c map[string]any) { c["aud"] = "someone-else" })
	if err := verify(); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Errorf("mutated aud: err = %v", err)
	}
	r.p.SignNextIDTokenWithOtherKey()
	if err := verify(); err == nil {
		t.Error("ID token signed with the other key verified")
	}
	r.p.SetIDTokenAlgNone()
	if err := verify(); err == nil {
		t.Error("unsigned ID token verified")
	}
	if err := verify(); err != nil {
		t.Errorf("tampering was not one-shot: %v", err)
	}
}

func TestTokenResponseOverride(t *testing.T) {
	r := newRP(t)
	bigAccess := strings.Repeat("A", 3000)
	r.p.SetTokenResponse(func(grant string) map[string]any {
		if grant != providertest.GrantAuthorizationCode {
			return nil
		}
		return map[string]any{"access_token": bigAccess, "refresh_token": "rt-from-file", "expires_in": 60, "scope": nil}
	})
	tok := r.signIn(t)
	if tok.AccessToken != bigAccess || tok.RefreshToken != "rt-from-file" || tok.ExpiresIn != 60 || tok.Extra("scope") != nil {
		t.Fatalf("override not merged: %q %q %d", tok.RefreshToken, tok.Extra("scope"), tok.ExpiresIn)
	}
	if _, err := r.verifier().Verify(r.ctx, idToken(t, tok)); err != nil {
		t.Errorf("generated id_token lost: %v", err)
	}
	if _, err := r.op.UserInfo(r.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Errorf("overridden access token not accepted at userinfo: %v", err)
	}
	if _, err := r.refresh("rt-from-file"); err != nil {
		t.Errorf("overridden refresh token not accepted: %v", err)
	}
}

func TestFaults(t *testing.T) {
	p := providertest.New(t)
	ctx := t.Context()
	p.SetFault(providertest.EndpointDiscovery, providertest.Fault503)
	if _, err := oidc.NewProvider(ctx, p.Issuer); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("discovery with 503 fault: err = %v", err)
	}
	p.SetFault(providertest.EndpointDiscovery, providertest.FaultNone)
	op, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatalf("discovery after clearing the fault: %v", err)
	}

	conf := &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, Endpoint: op.Endpoint(), RedirectURL: callback, Scopes: []string{"openid"}}
	conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	p.SetFault(providertest.EndpointToken, providertest.FaultHang)
	hangCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = conf.Exchange(hangCtx, "whatever")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hang outlived the client's context: %v", d)
	}

	p.SetFault(providertest.EndpointToken, providertest.FaultInvalidGrant)
	_, err = conf.Exchange(ctx, "whatever")
	wantOAuthError(t, err, "invalid_grant")

	p.SetFaultN(providertest.EndpointKeys, providertest.Fault503, 1)
	for i, want := range []int{503, 200} {
		resp, err := http.Get(p.URL(providertest.EndpointKeys))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("keys call %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if got := p.Calls(providertest.EndpointToken); got != 2 {
		t.Errorf("token calls = %d, want 2 (faulted calls count)", got)
	}
	if got := p.TokenRequests(providertest.GrantAuthorizationCode); got != 2 {
		t.Errorf("authorization_code requests = %d, want 2", got)
	}
}

func TestHangReleasedOnClose(t *testing.T) {
	p := providertest.New(t)
	p.SetFault(providertest.EndpointUserinfo, providertest.FaultHang)
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(p.URL(providertest.EndpointUserinfo))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	for p.Calls(providertest.EndpointUserinfo) == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("hung request got an answer, want a dropped connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the hanging request")
	}
}

func TestEndSession(t *testing.T) {
	r := newRP(t)
	p := r.p
	tok := r.signIn(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{
		"id_token_hint":            {idToken(t, tok)},
		"post_logout_redirect_uri": {"https://app.example.com/bye"},
		"state":                    {"s1"},
	}
	resp, err := client.Get(p.URL(providertest.EndpointEndSession) + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	if resp.StatusCode != http.StatusFound || loc == nil || loc.String() != "https://app.example.com/bye?state=s1" {
		t.Errorf("end_session: %d %v", resp.StatusCode, loc)
	}

	resp, err = client.Get(p.URL(providertest.EndpointEndSession))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "signed out") {
		t.Errorf("end_session without redirect: %d %q", resp.StatusCode, body)
	}

	forged := url.Values{"id_token_hint": {p.SignJWTWithOtherKey(map[string]any{"sub": "x"})}}
	resp, err = client.Get(p.URL(providertest.EndpointEndSession) + "?" + forged.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("forged id_token_hint: status %d, want 400", resp.StatusCode)
	}

	got := p.EndSessions()
	if len(got) != 3 || got[0].Get("state") != "s1" || got[0].Get("id_token_hint") != q.Get("id_token_hint") || len(got[1]) != 0 {
		t.Errorf("EndSessions() = %v", got)
	}

	off := providertest.New(t, providertest.WithoutEndSession())
	resp, err = client.Get(off.URL(providertest.EndpointEndSession))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("disabled end_session: status %d", resp.StatusCode)
	}
}

func TestLogoutTokenAndSignJWT(t *testing.T) {
	r := newRP(t)
	v := r.verifier()
	raw := r.p.LogoutToken("sub-1", "sid-1")
	lt, err := v.VerifyLogout(r.ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejects the logout token: %v", err)
	}
	if lt.Subject != "sub-1" || lt.SessionID != "sid-1" || lt.TokenID == "" || !lt.IssuedAt.Equal(r.p.Now()) {
		t.Errorf("logout token = %+v", lt)
	}
	lt2, err := v.VerifyLogout(r.ctx, r.p.LogoutToken("", "sid-1"))
	if err != nil || lt2.TokenID == lt.TokenID || lt2.Subject != "" {
		t.Errorf("second logout token: %+v %v (jti must be unique)", lt2, err)
	}

	claims := r.p.LogoutTokenClaims("sub-1", "")
	claims["nonce"] = "x"
	if _, err := v.VerifyLogout(r.ctx, r.p.SignJWT(claims)); err == nil {
		t.Error("logout token with nonce verified")
	}
	delete(claims, "nonce")
	if _, err := v.VerifyLogout(r.ctx, r.p.SignJWT(claims)); err != nil {
		t.Errorf("SignJWT of valid claims: %v", err)
	}
	if _, err := v.VerifyLogout(r.ctx, r.p.SignJWTWithOtherKey(claims)); err == nil {
		t.Error("logout token signed with the other key verified")
	}
	r.p.Advance(3 * time.Minute)
	if _, err := v.VerifyLogout(r.ctx, raw); err == nil {
		t.Error("stale logout token verified")
	}
}

func TestTLS(t *testing.T) {
	r := newRP(t, providertest.WithTLS())
	if !strings.HasPrefix(r.p.Issuer, "https://") {
		t.Fatalf("issuer = %q", r.p.Issuer)
	}
	if _, err := r.verifier().Verify(r.ctx, idToken(t, r.signIn(t))); err != nil {
		t.Fatal(err)
	}
}

func TestCounters(t *testing.T) {
	r := newRP(t)
	tok := r.signIn(t)
	if _, err := r.refresh(tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, _ = r.conf.Exchange(r.ctx, "bogus")
	if _, err := r.verifier().Verify(r.ctx, idToken(t, tok)); err != nil {
		t.Fatal(err)
	}
	for endpoint, want := range map[string]int{
		providertest.EndpointDiscovery: 1,
		providertest.EndpointAuthorize: 1,
		providertest.EndpointToken:     3,
		providertest.EndpointKeys:      1,
		providertest.EndpointUserinfo:  0,
	} {
		if got := r.p.Calls(endpoint); got != want {
			t.Errorf("Calls(%q) = %d, want %d", endpoint, got, want)
		}
	}
	if a, rf := r.p.TokenRequests(providertest.GrantAuthorizationCode), r.p.TokenRequests(providertest.GrantRefreshToken); a != 2 || rf != 1 {
		t.Errorf("TokenRequests = %d code, %d refresh; want 2, 1", a, rf)
	}
}

// TestStart: a provider started without a testing.TB (the load benchmark's
// way) serves discovery until Close, which may be called twice.
func TestStart(t *testing.T) {
	p, err := providertest.Start(providertest.WithClient("bench", "s"))
	if err != nil {
		t.Fatal(err)
	}
	if p.ClientID != "bench" {
		t.Errorf("client ID %q", p.ClientID)
	}
	resp, err := http.Get(p.URL(providertest.EndpointDiscovery))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("discovery: status %d", resp.StatusCode)
	}
	p.Close()
	p.Close()
	if resp, err := http.Get(p.URL(providertest.EndpointDiscovery)); err == nil {
		resp.Body.Close()
		t.Error("discovery answers after Close")
	}
}
