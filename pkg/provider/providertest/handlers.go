package providertest

import (
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(endpoint string, methods []string, h http.HandlerFunc) {
		mux.Handle(endpointPaths[endpoint], p.endpoint(endpoint, methods, h))
	}
	get := []string{http.MethodGet, http.MethodHead}
	getPost := []string{http.MethodGet, http.MethodHead, http.MethodPost}
	post := []string{http.MethodPost}
	handle(EndpointDiscovery, get, p.handleDiscovery)
	handle(EndpointKeys, get, p.handleKeys)
	handle(EndpointAuthorize, getPost, p.handleAuthorize)
	handle(EndpointToken, post, p.handleToken)
	handle(EndpointUserinfo, getPost, p.handleUserinfo)
	handle(EndpointRevoke, post, p.handleRevoke)
	handle(EndpointEndSession, getPost, p.handleEndSession)
	return mux
}

// endpoint counts the call, applies any fault and checks the method.
func (p *Provider) endpoint(name string, methods []string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		grant := ""
		if name == EndpointToken && r.Method == http.MethodPost {
			grant = r.PostFormValue("grant_type")
		}
		p.mu.Lock()
		p.calls[name]++
		if name == EndpointToken {
			p.tokenRequests[grant]++
		}
		fault := p.takeFaultLocked(name)
		p.mu.Unlock()

		switch fault {
		case Fault503:
			writeError(w, &oauthError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "fault injected"})
			return
		case FaultHang:
			select {
			case <-r.Context().Done():
			case <-p.closed:
			}
			// Drop the connection rather than answer an empty 200.
			panic(http.ErrAbortHandler)
		case FaultInvalidGrant:
			writeError(w, invalidGrant("fault injected"))
			return
		case FaultInvalidRequest:
			writeError(w, badRequest("invalid_request", "fault injected"))
			return
		}
		if !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, &oauthError{status: http.StatusMethodNotAllowed, code: "invalid_request", desc: "method " + r.Method + " not allowed"})
			return
		}
		h(w, r)
	})
}

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{
		"issuer":                                p.Issuer,
		"authorization_endpoint":                p.URL(EndpointAuthorize),
		"token_endpoint":                        p.URL(EndpointToken),
		"userinfo_endpoint":                     p.URL(EndpointUserinfo),
		"jwks_uri":                              p.URL(EndpointKeys),
		"backchannel_logout_supported":          true,
		"backchannel_logout_session_supported":  true,
		"response_types_supported":              []string{"code"},
		"response_modes_supported":              []string{"query"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      p.cfg.challengeMethods,
		"token_endpoint_auth_methods_supported": p.cfg.authMethods,
		"grant_types_supported":                 []string{GrantAuthorizationCode, GrantRefreshToken},
		"scopes_supported":                      []string{"openid", "email", "profile", "groups", "offline_access"},
		"claims_supported": []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid",
			"email", "email_verified", "preferred_username", "name", "groups"},
		"authorization_response_iss_parameter_supported": true,
	}
	if p.cfg.revocation {
		doc["revocation_endpoint"] = p.URL(EndpointRevoke)
		doc["revocation_endpoint_auth_methods_supported"] = p.cfg.authMethods
	}
	if p.cfg.endSession {
		doc["end_session_endpoint"] = p.URL(EndpointEndSession)
	}
	writeJSON(w, http.StatusOK, doc)
}

func (p *Provider) handleKeys(w http.ResponseWriter, r *http.Request) {
	set := jwks()
	p.mu.Lock()
	if p.rotatedKID != "" {
		// A rotation: the new key first, the old one still published.
		set.Keys = append([]jose.JSONWebKey{{Key: otherKey.Public(), KeyID: p.rotatedKID, Algorithm: string(jose.RS256), Use: "sig"}}, set.Keys...)
	}
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, set)
}

func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, badRequest("invalid_request", "unparsable request"))
		return
	}
	q := r.Form
	if q.Get("client_id") != p.ClientID {
		writeError(w, badRequest("invalid_request", "unknown client_id"))
		return
	}
	redirectURI := q.Get("redirect_uri")
	if !p.redirectAllowed(redirectURI, p.cfg.redirectURIs) {
		writeError(w, badRequest("invalid_request", "redirect_uri missing, not absolute http(s) or not registered"))
		return
	}
	if q.Get("response_type") != "code" {
		writeError(w, badRequest("unsupported_response_type", "response_type must be code"))
		return
	}
	scope := q.Get("scope")
	if !hasScope(scope, "openid") {
		writeError(w, badRequest("invalid_scope", "scope must include openid"))
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge != "":
		if method == "" {
			method = "plain" // RFC 7636 4.3
		}
		if !slices.Contains(p.cfg.challengeMethods, method) {
			writeError(w, badRequest("invalid_request", "code_challenge_method "+method+" not supported"))
			return
		}
		if len(challenge) < 43 || len(challenge) > 128 {
			writeError(w, badRequest("invalid_request", "code_challenge must be 43 to 128 characters"))
			return
		}
	case method != "":
		writeError(w, badRequest("invalid_request", "code_challenge_method without code_challenge"))
		return
	case p.cfg.pkceRequired:
		writeError(w, badRequest("invalid_request", "code_challenge required"))
		return
	}

	now := p.Now()
	state := q.Get("state")
	p.mu.Lock()
	if e := p.authorizeError; e != "" {
		p.authorizeError = ""
		p.mu.Unlock()
		redirectWith(w, r, redirectURI, url.Values{"error": {e}, "state": {state}, "iss": {p.Issuer}})
		return
	}
	if p.cfg.offlineConsent && !strings.Contains(" "+q.Get("prompt")+" ", " consent ") {
		scope = strings.Join(slices.DeleteFunc(strings.Fields(scope), func(s string) bool { return s == "offline_access" }), " ")
	}
	p.authorizations = append(p.authorizations, cloneValues(q))
	code := randomString()
	p.codes[code] = &authCode{
		clientID:    p.ClientID,
		redirectURI: redirectURI,
		challenge:   challenge,
		method:      method,
		nonce:       q.Get("nonce"),
		scope:       scope,
		user:        p.user.clone(),
		authTime:    now,
		expires:     now.Add(CodeTTL),
	}
	p.mu.Unlock()
	redirectWith(w, r, redirectURI, url.Values{"code": {code}, "state": {state}, "iss": {p.Issuer}})
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	now := p.Now()
	clientID, _, oerr := p.authenticateClient(r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	form := r.PostForm
	var plan *tokenPlan
	switch grant := form.Get("grant_type"); grant {
	case GrantAuthorizationCode:
		p.mu.Lock()
		plan, oerr = p.redeemCodeLocked(clientID, form.Get("code"), form.Get("redirect_uri"), form.Get("code_verifier"), now)
		p.mu.Unlock()
	case GrantRefreshToken:
		p.mu.Lock()
		plan, oerr = p.refreshLocked(clientID, form.Get("refresh_token"), form.Get("scope"), now)
		p.mu.Unlock()
	case "":
		oerr = badRequest("invalid_request", "grant_type missing")
	default:
		oerr = badRequest("unsupported_grant_type", "grant_type "+grant+" not supported")
	}
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, p.issue(plan))
}

func (p *Provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	now := p.Now()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="providertest"`)
		writeError(w, &oauthError{status: http.StatusUnauthorized, code: "invalid_request", desc: "bearer token required"})
		return
	}
	p.mu.Lock()
	at, known := p.accessTokens[token]
	valid := known && !at.revoked && !at.fam.revoked && now.Before(at.expires)
	var claims map[string]any
	if valid {
		claims = userClaims(p.effectiveUserLocked(at.fam))
		for k, v := range p.userinfoOverride {
			if v == nil {
				delete(claims, k)
			} else {
				claims[k] = v
			}
		}
	}
	p.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", `Bearer realm="providertest", error="invalid_token"`)
		writeError(w, &oauthError{status: http.StatusUnauthorized, code: "invalid_token", desc: "access token unknown, expired or revoked"})
		return
	}
	writeJSON(w, http.StatusOK, claims)
}

func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if !p.cfg.revocation {
		http.NotFound(w, r)
		return
	}
	clientID, method, oerr := p.authenticateClient(r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		writeError(w, badRequest("invalid_request", "token missing"))
		return
	}
	rev := Revocation{Token: token, TypeHint: r.PostForm.Get("token_type_hint"), ClientID: clientID, AuthMethod: method}
	p.mu.Lock()
	if rt, ok := p.refreshTokens[token]; ok && rt.fam.clientID == clientID {
		rev.Kind = "refresh_token"
		rt.fam.revoked = true
	} else if at, ok := p.accessTokens[token]; ok && at.fam.clientID == clientID {
		rev.Kind = "access_token"
		at.revoked = true
	}
	p.revocations = append(p.revocations, rev)
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK) // RFC 7009: also for unknown tokens
}

func (p *Provider) handleEndSession(w http.ResponseWriter, r *http.Request) {
	if !p.cfg.endSession {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, badRequest("invalid_request", "unparsable request"))
		return
	}
	q := r.Form
	p.mu.Lock()
	p.endSessions = append(p.endSessions, cloneValues(q))
	p.mu.Unlock()

	if id := q.Get("client_id"); id != "" && id != p.ClientID {
		writeError(w, badRequest("invalid_request", "unknown client_id"))
		return
	}
	if hint := q.Get("id_token_hint"); hint != "" {
		if _, ok := verifyOwnJWT(hint); !ok {
			writeError(w, badRequest("invalid_request", "id_token_hint was not issued by this provider"))
			return
		}
	}
	target := q.Get("post_logout_redirect_uri")
	if target == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "signed out\n")
		return
	}
	if !p.redirectAllowed(target, p.cfg.postLogoutURIs) {
		writeError(w, badRequest("invalid_request", "post_logout_redirect_uri not absolute http(s) or not registered"))
		return
	}
	extra := url.Values{}
	if state := q.Get("state"); state != "" {
		extra.Set("state", state)
	}
	redirectWith(w, r, target, extra)
}

// authenticateClient checks client_secret_basic, client_secret_post or
// none (public clients) against the advertised methods. It parses the form.
func (p *Provider) authenticateClient(r *http.Request) (clientID, method string, oerr *oauthError) {
	fail := func(desc string) (string, string, *oauthError) {
		return "", "", &oauthError{status: http.StatusUnauthorized, code: "invalid_client", desc: desc}
	}
	if err := r.ParseForm(); err != nil {
		return "", "", badRequest("invalid_request", "unparsable form")
	}
	var secret string
	formID := r.PostForm.Get("client_id")
	if user, pass, ok := r.BasicAuth(); ok {
		method = AuthMethodBasic
		clientID, secret = formUnescape(user), formUnescape(pass)
		if formID != "" && formID != clientID {
			return fail("client_id in form and Authorization header differ")
		}
	} else if r.PostForm.Has("client_secret") {
		method, clientID, secret = AuthMethodPost, formID, r.PostForm.Get("client_secret")
	} else {
		method, clientID = AuthMethodNone, formID
	}
	switch {
	case clientID == "":
		return fail("client authentication missing")
	case !slices.Contains(p.cfg.authMethods, method):
		return fail("client authentication method " + method + " not allowed")
	case clientID != p.ClientID:
		return fail("unknown client")
	case method == AuthMethodNone && p.ClientSecret != "":
		return fail("confidential client must authenticate")
	case subtle.ConstantTimeCompare([]byte(secret), []byte(p.ClientSecret)) != 1:
		return fail("wrong client secret")
	}
	return clientID, method, nil
}

// formUnescape undoes the form encoding RFC 6749 2.3.1 applies to Basic
// credentials, leaving values that are not valid encodings alone.
func formUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func (p *Provider) redirectAllowed(uri string, registered []string) bool {
	if uri == "" {
		return false
	}
	if len(registered) > 0 {
		return slices.Contains(registered, uri)
	}
	u, err := url.Parse(uri)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Fragment == ""
}

// redirectWith answers 302 to target with params added to its query; empty
// values are left out.
func redirectWith(w http.ResponseWriter, r *http.Request, target string, params url.Values) {
	u, err := url.Parse(target)
	if err != nil {
		writeError(w, badRequest("invalid_request", "bad redirect target"))
		return
	}
	q := u.Query()
	for k, vv := range params {
		for _, v := range vv {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func badRequest(code, desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, desc: desc}
}

func writeError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusUnauthorized && e.code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="providertest"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func readSmall(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	return string(b)
}
