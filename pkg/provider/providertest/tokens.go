package providertest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Keys are generated once per process: RSA key generation is slow.
var (
	keysOnce   sync.Once
	signingKey *rsa.PrivateKey
	otherKey   *rsa.PrivateKey
	signingKID string
	keysErr    error
)

// loadKeys makes the keys on first use; an error stays (so does Start's).
func loadKeys() error {
	keysOnce.Do(func() {
		if signingKey, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr != nil {
			return
		}
		if otherKey, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr != nil {
			return
		}
		jwk := jose.JSONWebKey{Key: signingKey.Public()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			keysErr = err
			return
		}
		signingKID = base64.RawURLEncoding.EncodeToString(tp)
	})
	if keysErr != nil {
		return fmt.Errorf("providertest: signing keys: %w", keysErr)
	}
	return nil
}

// PublicKey returns the provider's signing key, as published at /keys.
func (p *Provider) PublicKey() *rsa.PublicKey { return &signingKey.PublicKey }

func jwks() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:       signingKey.Public(),
		KeyID:     signingKID,
		Algorithm: string(jose.RS256),
		Use:       "sig",
	}}}
}

// SignJWT signs claims with the provider's key (RS256, published kid,
// typ JWT).
func (p *Provider) SignJWT(claims map[string]any) string {
	return signRS256(signingKey, "JWT", claims)
}

// SignJWTWithOtherKey signs claims with a key that is not published but
// under the published kid, so verification fails on the signature.
func (p *Provider) SignJWTWithOtherKey(claims map[string]any) string {
	return signRS256(otherKey, "JWT", claims)
}

// SignJWTWithKeyID signs claims with a key under kid: a key the provider
// publishes under that kid only after RotateKey(kid).
func (p *Provider) SignJWTWithKeyID(claims map[string]any, kid string) string {
	return signWith(otherKey, kid, "JWT", claims)
}

// RotateKey publishes a second signing key under kid, first in the JWKS (the
// one SignJWTWithKeyID signs with), as a provider does when it rotates keys.
func (p *Provider) RotateKey(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rotatedKID = kid
}

// LogoutTokenClaims returns the claims of a valid back-channel logout token
// for sub and/or sid (empty ones are left out), for tampering before
// SignJWT.
func (p *Provider) LogoutTokenClaims(sub, sid string) map[string]any {
	now := p.Now()
	claims := map[string]any{
		"iss": p.Issuer,
		"aud": p.ClientID,
		"iat": now.Unix(),
		"exp": now.Add(2 * time.Minute).Unix(),
		"jti": randomString(),
		"events": map[string]any{
			"http://schemas.openid.net/event/backchannel-logout": map[string]any{},
		},
	}
	if sub != "" {
		claims["sub"] = sub
	}
	if sid != "" {
		claims["sid"] = sid
	}
	return claims
}

// LogoutToken returns a valid signed back-channel logout token (typ
// logout+jwt) for sub and/or sid with a unique jti.
func (p *Provider) LogoutToken(sub, sid string) string {
	return signRS256(signingKey, "logout+jwt", p.LogoutTokenClaims(sub, sid))
}

func signRS256(key *rsa.PrivateKey, typ string, claims map[string]any) string {
	return signWith(key, signingKID, typ, claims)
}

func signWith(key *rsa.PrivateKey, kid, typ string, claims map[string]any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic("providertest: encoding claims: " + err.Error())
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		panic("providertest: creating signer: " + err.Error())
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		panic("providertest: signing: " + err.Error())
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		panic("providertest: serializing: " + err.Error())
	}
	return s
}

func unsignedJWT(claims map[string]any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic("providertest: encoding claims: " + err.Error())
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "."
}

// verifyOwnJWT reports whether raw is a JWT signed by the provider's key.
func verifyOwnJWT(raw string) (map[string]any, bool) {
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, false
	}
	payload, err := jws.Verify(signingKey.Public())
	if err != nil {
		return nil, false
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil {
		return nil, false
	}
	return claims, true
}

func randomString() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// family is one sign-in: every token issued from one authorization code,
// through all refresh rotations. Revoking it invalidates all of them.
type family struct {
	sid      string
	clientID string
	user     User
	scope    string
	authTime time.Time
	revoked  bool
}

type authCode struct {
	clientID    string
	redirectURI string
	challenge   string
	method      string // "" when the request had no PKCE
	nonce       string
	scope       string
	user        User
	authTime    time.Time
	expires     time.Time
	used        bool
	fam         *family // set once redeemed
}

type refreshRecord struct {
	fam     *family
	scope   string
	expires time.Time
	used    bool // rotated away
}

type accessRecord struct {
	fam     *family
	expires time.Time
	revoked bool
}

// oauthError is an RFC 6749 error answer.
type oauthError struct {
	status int
	code   string
	desc   string
}

func invalidGrant(format string, args ...any) *oauthError {
	return &oauthError{status: 400, code: "invalid_grant", desc: fmt.Sprintf(format, args...)}
}

// tokenPlan is what the token endpoint decided under the lock; issue turns
// it into signed tokens outside the lock.
type tokenPlan struct {
	grant        string
	now          time.Time
	fam          *family
	user         User
	scope        string
	nonce        string
	withIDToken  bool
	refreshToken string // "" when none is issued
	mutate       func(map[string]any)
	otherKey     bool
	algNone      bool
	override     func(string) map[string]any
}

// effectiveUserLocked is the profile a session sees now: the current user
// if the subject is unchanged, else the user who signed in.
func (p *Provider) effectiveUserLocked(fam *family) User {
	if p.user.Subject == fam.user.Subject {
		return p.user.clone()
	}
	return fam.user.clone()
}

func (p *Provider) newRefreshLocked(fam *family, scope string, now time.Time) string {
	tok := randomString()
	p.refreshTokens[tok] = &refreshRecord{fam: fam, scope: scope, expires: now.Add(p.cfg.refreshTTL)}
	return tok
}

// takeIDTokenOptionsLocked consumes the one-shot ID-token tampering.
func (p *Provider) takeIDTokenOptionsLocked(plan *tokenPlan) {
	plan.mutate, p.idTokenMutator = p.idTokenMutator, nil
	plan.otherKey, p.idTokenOtherKey = p.idTokenOtherKey, false
	plan.algNone, p.idTokenAlgNone = p.idTokenAlgNone, false
}

// redeemCodeLocked handles grant_type=authorization_code.
func (p *Provider) redeemCodeLocked(clientID, code, redirectURI, verifier string, now time.Time) (*tokenPlan, *oauthError) {
	ac, ok := p.codes[code]
	if !ok || code == "" {
		return nil, invalidGrant("unknown authorization code")
	}
	if ac.clientID != clientID {
		return nil, invalidGrant("authorization code was issued to another client")
	}
	if ac.used {
		// Like real providers, a replayed code revokes what it yielded.
		if ac.fam != nil {
			ac.fam.revoked = true
		}
		return nil, invalidGrant("authorization code already used")
	}
	ac.used = true // any redemption attempt consumes the code
	if !now.Before(ac.expires) {
		return nil, invalidGrant("authorization code expired")
	}
	if redirectURI != ac.redirectURI {
		return nil, invalidGrant("redirect_uri does not match the authorization request")
	}
	switch ac.method {
	case "":
		if verifier != "" {
			return nil, invalidGrant("code_verifier sent but the authorization request had no code_challenge")
		}
	case "S256", "plain":
		if verifier == "" {
			return nil, invalidGrant("code_verifier required")
		}
		got := verifier
		if ac.method == "S256" {
			got = s256(verifier)
		}
		if got != ac.challenge {
			return nil, invalidGrant("code_verifier does not match code_challenge")
		}
	}
	fam := &family{
		sid:      randomString(),
		clientID: clientID,
		user:     ac.user,
		scope:    ac.scope,
		authTime: ac.authTime,
	}
	ac.fam = fam
	plan := &tokenPlan{
		grant:       GrantAuthorizationCode,
		now:         now,
		fam:         fam,
		user:        ac.user.clone(),
		scope:       ac.scope,
		nonce:       ac.nonce,
		withIDToken: true,
		override:    p.tokenResponse,
	}
	if p.cfg.refreshAlways || hasScope(ac.scope, "offline_access") {
		plan.refreshToken = p.newRefreshLocked(fam, ac.scope, now)
	}
	p.takeIDTokenOptionsLocked(plan)
	return plan, nil
}

// refreshLocked handles grant_type=refresh_token with rotation and reuse
// detection.
func (p *Provider) refreshLocked(clientID, token, scope string, now time.Time) (*tokenPlan, *oauthError) {
	rt, ok := p.refreshTokens[token]
	if !ok || token == "" {
		return nil, invalidGrant("unknown refresh token")
	}
	if rt.fam.clientID != clientID {
		return nil, invalidGrant("refresh token was issued to another client")
	}
	if rt.fam.revoked {
		return nil, invalidGrant("refresh token revoked")
	}
	if rt.used {
		rt.fam.revoked = true
		return nil, invalidGrant("refresh token reused; all tokens of this sign-in are revoked")
	}
	if !now.Before(rt.expires) {
		return nil, invalidGrant("refresh token expired")
	}
	if scope == "" {
		scope = rt.scope
	} else {
		for s := range strings.FieldsSeq(scope) {
			if !hasScope(rt.scope, s) {
				return nil, &oauthError{status: 400, code: "invalid_scope", desc: "scope " + s + " was not granted"}
			}
		}
	}
	plan := &tokenPlan{
		grant:       GrantRefreshToken,
		now:         now,
		fam:         rt.fam,
		user:        p.effectiveUserLocked(rt.fam),
		scope:       scope,
		withIDToken: p.cfg.refreshIDToken,
		override:    p.tokenResponse,
	}
	if p.cfg.rotation {
		rt.used = true
		plan.refreshToken = p.newRefreshLocked(rt.fam, rt.scope, now)
	}
	if plan.withIDToken {
		p.takeIDTokenOptionsLocked(plan)
	}
	return plan, nil
}

// issue signs the planned tokens, registers the access token and applies
// the token-response override. It must be called without the lock.
func (p *Provider) issue(plan *tokenPlan) map[string]any {
	fam := plan.fam
	u := plan.user
	accessClaims := map[string]any{
		"iss":       p.Issuer,
		"sub":       u.Subject,
		"aud":       fam.clientID,
		"client_id": fam.clientID,
		"exp":       plan.now.Add(p.cfg.accessTTL).Unix(),
		"iat":       plan.now.Unix(),
		"jti":       randomString(),
		"scope":     plan.scope,
		"sid":       fam.sid,
	}
	if u.Groups != nil {
		accessClaims["groups"] = u.Groups
	}
	accessToken := signRS256(signingKey, "at+jwt", accessClaims)
	access := &accessRecord{fam: fam, expires: plan.now.Add(p.cfg.accessTTL)}

	resp := map[string]any{
		"access_token": accessToken,
		"token_type":   "Bearer",
		"expires_in":   int64(p.cfg.accessTTL / time.Second),
		"scope":        plan.scope,
	}
	if plan.refreshToken != "" {
		resp["refresh_token"] = plan.refreshToken
	}
	if plan.withIDToken {
		resp["id_token"] = p.idToken(plan, accessToken)
	}

	p.mu.Lock()
	p.accessTokens[accessToken] = access
	p.mu.Unlock()

	if plan.override == nil {
		return resp
	}
	for k, v := range plan.override(plan.grant) {
		if v == nil {
			delete(resp, k)
		} else {
			resp[k] = v
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := resp["access_token"].(string); ok && s != accessToken {
		p.accessTokens[s] = access
	}
	if s, ok := resp["refresh_token"].(string); ok && s != plan.refreshToken {
		if plan.refreshToken != "" {
			p.refreshTokens[s] = p.refreshTokens[plan.refreshToken]
		} else {
			p.refreshTokens[s] = &refreshRecord{fam: fam, scope: plan.scope, expires: plan.now.Add(p.cfg.refreshTTL)}
		}
	}
	return resp
}

func (p *Provider) idToken(plan *tokenPlan, accessToken string) string {
	fam := plan.fam
	claims := map[string]any{}
	if !p.cfg.claimsOnlyUserinf {
		claims = userClaims(plan.user)
		claims["auth_time"] = fam.authTime.Unix()
		claims["at_hash"] = atHash(accessToken)
	}
	claims["iss"] = p.Issuer
	claims["sub"] = plan.user.Subject
	claims["aud"] = fam.clientID
	claims["exp"] = plan.now.Add(IDTokenTTL).Unix()
	claims["iat"] = plan.now.Unix()
	claims["sid"] = fam.sid
	if plan.nonce != "" {
		claims["nonce"] = plan.nonce
	}
	if plan.mutate != nil {
		plan.mutate(claims)
	}
	switch {
	case plan.algNone:
		return unsignedJWT(claims)
	case plan.otherKey:
		return signRS256(otherKey, "JWT", claims)
	default:
		return signRS256(signingKey, "JWT", claims)
	}
}

// atHash is the OIDC at_hash of an RS256-signed token's access token.
func atHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// userClaims are the profile claims of u, as in userinfo.
func userClaims(u User) map[string]any {
	claims := map[string]any{"sub": u.Subject}
	if u.Email != "" {
		claims["email"] = u.Email
		claims["email_verified"] = u.EmailVerified
	}
	if u.PreferredUsername != "" {
		claims["preferred_username"] = u.PreferredUsername
	}
	if u.Name != "" {
		claims["name"] = u.Name
	}
	if u.Groups != nil {
		claims["groups"] = append([]string(nil), u.Groups...)
	}
	for k, v := range u.Extra {
		claims[k] = v
	}
	return claims
}

func hasScope(scopes, want string) bool {
	return slices.Contains(strings.Fields(scopes), want)
}
