package identity

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// std are the default claim names (oidc.claims).
var std = Names{User: "sub", Email: "email", PreferredUsername: "preferred_username", Groups: "groups"}

// rawClaims is a ClaimSource over a JSON text, as a provider wrote it.
type rawClaims string

func (r rawClaims) Claims(v any) error { return json.Unmarshal([]byte(r), v) }

// read decodes a JSON text as Decode does for a token and reads it.
func read(t *testing.T, n Names, js string) Identity {
	t.Helper()
	claims, err := Decode(rawClaims(js))
	if err != nil {
		t.Fatalf("Decode(%s): %v", js, err)
	}
	return n.Read(claims)
}

func TestRead(t *testing.T) {
	tests := []struct {
		name   string
		names  Names
		claims string
		want   Identity
	}{
		{
			name:   "every claim",
			names:  std,
			claims: `{"sub":"u1","email":"jane@example.com","email_verified":true,"preferred_username":"jane","groups":["staff","admins"]}`,
			want:   Identity{User: "u1", Email: "jane@example.com", PreferredUsername: "jane", Groups: []string{"staff", "admins"}, present: allFields},
		},
		{
			name:   "nothing stated",
			names:  std,
			claims: `{"name":"Jane"}`,
			want:   Identity{},
		},
		{
			name:   "email_verified false blanks the email",
			names:  std,
			claims: `{"email":"jane@example.com","email_verified":false}`,
			want:   Identity{present: fieldEmail},
		},
		{
			name:   `email_verified "false" (a string) blanks the email`,
			names:  std,
			claims: `{"email":"jane@example.com","email_verified":"false"}`,
			want:   Identity{present: fieldEmail},
		},
		{
			name:   `email_verified "FALSE" blanks the email`,
			names:  std,
			claims: `{"email":"jane@example.com","email_verified":"FALSE"}`,
			want:   Identity{present: fieldEmail},
		},
		{
			name:   "email_verified false without an email states the email as empty",
			names:  std,
			claims: `{"email_verified":false}`,
			want:   Identity{present: fieldEmail},
		},
		{
			name:   `email_verified "true" keeps the email`,
			names:  std,
			claims: `{"email":"jane@example.com","email_verified":"true"}`,
			want:   Identity{Email: "jane@example.com", present: fieldEmail},
		},
		{
			name:   "email_verified absent keeps the email",
			names:  std,
			claims: `{"email":"jane@example.com"}`,
			want:   Identity{Email: "jane@example.com", present: fieldEmail},
		},
		{
			name:   "email_verified true without an email leaves it unstated",
			names:  std,
			claims: `{"email_verified":true}`,
			want:   Identity{},
		},
		{
			name:   "numeric sub kept as written",
			names:  std,
			claims: `{"sub":248289761001}`,
			want:   Identity{User: "248289761001", present: fieldUser},
		},
		{
			name:   "number beyond float64 precision kept exactly",
			names:  Names{User: "employee_number"},
			claims: `{"employee_number":12345678901234567891}`,
			want:   Identity{User: "12345678901234567891", present: fieldUser},
		},
		{
			name:   "boolean claim as text",
			names:  Names{PreferredUsername: "flag"},
			claims: `{"flag":true}`,
			want:   Identity{PreferredUsername: "true", present: fieldPreferredUsername},
		},
		{
			name:   "object as a string claim is empty but stated",
			names:  std,
			claims: `{"preferred_username":{"a":1}}`,
			want:   Identity{present: fieldPreferredUsername},
		},
		{
			name:   "lone string for groups",
			names:  std,
			claims: `{"groups":"admins"}`,
			want:   Identity{Groups: []string{"admins"}, present: fieldGroups},
		},
		{
			name:   "empty string for groups",
			names:  std,
			claims: `{"groups":""}`,
			want:   Identity{Groups: nil, present: fieldGroups},
		},
		{
			name:   "empty groups list is stated",
			names:  std,
			claims: `{"groups":[]}`,
			want:   Identity{Groups: []string{}, present: fieldGroups},
		},
		{
			name:   "groups of another type",
			names:  std,
			claims: `{"groups":42}`,
			want:   Identity{Groups: nil, present: fieldGroups},
		},
		{
			// Numbers and booleans are kept as their text (numeric group IDs);
			// what has no text form, and empty strings, are dropped.
			name:   "group members without a text form dropped",
			names:  std,
			claims: `{"groups":["a",null,{"x":1},["b"],"",7,"c",true]}`,
			want:   Identity{Groups: []string{"a", "7", "c", "true"}, present: fieldGroups},
		},
		{
			name:   "custom claim names",
			names:  Names{User: "oid", Email: "mail", PreferredUsername: "login", Groups: "roles"},
			claims: `{"sub":"ignored","oid":"o-1","email":"ignored@example.com","mail":"m@example.com","preferred_username":"ignored","login":"jd","groups":["ignored"],"roles":["r1"]}`,
			want:   Identity{User: "o-1", Email: "m@example.com", PreferredUsername: "jd", Groups: []string{"r1"}, present: allFields},
		},
		{
			name:   "email_verified false applies to a custom email claim",
			names:  Names{Email: "mail"},
			claims: `{"mail":"m@example.com","email_verified":false}`,
			want:   Identity{present: fieldEmail},
		},
		{
			name:   "user and email from the same claim",
			names:  Names{User: "email", Email: "email"},
			claims: `{"email":"jane@example.com"}`,
			want:   Identity{User: "jane@example.com", Email: "jane@example.com", present: fieldUser | fieldEmail},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := read(t, tt.names, tt.claims)
			if !identical(got, tt.want) {
				t.Errorf("Read(%s)\n got %+v\nwant %+v", tt.claims, got, tt.want)
			}
		})
	}
}

// identical compares identities, telling a nil Groups from an empty one.
func identical(a, b Identity) bool {
	return a.User == b.User && a.Email == b.Email && a.PreferredUsername == b.PreferredUsername &&
		slices.Equal(a.Groups, b.Groups) && (a.Groups == nil) == (b.Groups == nil) && a.present == b.present
}

func TestReadFloat64(t *testing.T) {
	// Claims decoded without UseNumber carry float64: still no exponent.
	id := std.Read(map[string]any{"sub": float64(248289761001)})
	if id.User != "248289761001" {
		t.Errorf("User = %q", id.User)
	}
}

func TestDecode(t *testing.T) {
	claims, err := Decode(rawClaims(`{"sub":248289761001,"n":1.5}`))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := claims["sub"].(json.Number); !ok || n.String() != "248289761001" {
		t.Errorf("sub = %#v, want json.Number 248289761001", claims["sub"])
	}
	boom := errors.New("boom")
	if _, err := Decode(failingSource{boom}); !errors.Is(err, boom) {
		t.Errorf("source error = %v", err)
	}
	if _, err := Decode(rawClaims(`[1,2]`)); err == nil {
		t.Error("a JSON array decoded as claims")
	}
}

type failingSource struct{ err error }

func (f failingSource) Claims(any) error { return f.err }

func TestCompleteAndFill(t *testing.T) {
	full := read(t, std, `{"sub":"other","email":"other@example.com","preferred_username":"other","groups":["other"]}`)
	if !full.Complete() {
		t.Fatal("an identity with every claim is not complete")
	}

	// Stated fields, even empty ones, are not overwritten.
	id := read(t, std, `{"sub":"u1","groups":[]}`)
	if id.Complete() {
		t.Fatal("an identity without email and preferred_username is complete")
	}
	id.Fill(full)
	want := Identity{User: "u1", Email: "other@example.com", PreferredUsername: "other", Groups: []string{}, present: allFields}
	if !identical(id, want) {
		t.Errorf("Fill\n got %+v\nwant %+v", id, want)
	}
	if !id.Complete() {
		t.Error("not complete after filling every field")
	}

	// An unverified email is stated: Fill keeps it blank.
	id = read(t, std, `{"sub":"u1","email":"x@example.com","email_verified":false}`)
	id.Fill(full)
	if id.Email != "" {
		t.Errorf("Fill replaced an email stated as unverified with %q", id.Email)
	}

	// What other does not state is not taken, and stays unstated.
	id = read(t, std, `{"sub":"u1"}`)
	id.Fill(read(t, std, `{"email":"e@example.com"}`))
	want = Identity{User: "u1", Email: "e@example.com", present: fieldUser | fieldEmail}
	if !identical(id, want) {
		t.Errorf("partial Fill\n got %+v\nwant %+v", id, want)
	}
	if id.Complete() {
		t.Error("complete although preferred_username and groups are unstated")
	}
	id.Fill(read(t, std, `{"preferred_username":"pu","groups":"g"}`))
	if !id.Complete() || id.PreferredUsername != "pu" || !slices.Equal(id.Groups, []string{"g"}) {
		t.Errorf("second Fill: %+v", id)
	}
}

// --- ID tokens and userinfo answers -----------------------------------------

// idp mints verified ID tokens with providertest's keys.
type idp struct {
	p        *providertest.Provider
	verifier *oidc.IDTokenVerifier
	now      time.Time
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	p := providertest.New(t)
	now := p.Now()
	keys := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{p.PublicKey()}}
	return &idp{
		p:        p,
		verifier: oidc.NewVerifier(p.Issuer, keys, &oidc.Config{ClientID: p.ClientID, Now: func() time.Time { return now }}),
		now:      now,
	}
}

// token returns a verified ID token with claims (and the protocol ones).
func (e *idp) token(t *testing.T, claims map[string]any) *oidc.IDToken {
	t.Helper()
	all := map[string]any{"iss": e.p.Issuer, "aud": e.p.ClientID, "iat": e.now.Unix(), "exp": e.now.Add(time.Hour).Unix()}
	maps.Copy(all, claims)
	tok, err := e.verifier.Verify(t.Context(), e.p.SignJWT(all))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return tok
}

// userinfoAnswer is the *oidc.UserInfo go-oidc makes of a userinfo
// endpoint answering body (its claims are unexported: only go-oidc makes one).
func userinfoAnswer(t *testing.T, body string) *oidc.UserInfo {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	p := (&oidc.ProviderConfig{UserInfoURL: srv.URL}).NewProvider(t.Context())
	info, err := p.UserInfo(t.Context(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "at"}))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	return info
}

// fakeUserinfo answers every call alike and records the access tokens.
type fakeUserinfo struct {
	info *oidc.UserInfo
	err  error

	mu     sync.Mutex
	tokens []string
}

func (f *fakeUserinfo) Userinfo(_ context.Context, accessToken string) (*oidc.UserInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, accessToken)
	return f.info, f.err
}

func (f *fakeUserinfo) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tokens)
}

// logBuffer is a Builder's log, to check what it warned about.
type logBuffer = testenv.LockedBuffer

func newBuilder(ui UserinfoSource) (*Builder, *logBuffer) {
	logs := &logBuffer{}
	return &Builder{
		Names:    std,
		Keep:     Keep{AccessToken: true, IDToken: true, RefreshToken: true},
		MaxAge:   24 * time.Hour,
		Userinfo: ui,
		Log:      slog.New(slog.NewTextHandler(logs, nil)),
	}, logs
}

func signInTokens(now time.Time) *provider.Tokens {
	return &provider.Tokens{AccessToken: "at-1", RefreshToken: "rt-1", IDToken: "id-1", Expiry: now.Add(time.Hour), Lifetime: time.Hour}
}

// --- SignIn ------------------------------------------------------------------

func TestSignInFromTheIDToken(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{err: errors.New("must not be asked")}
	b, _ := newBuilder(ui)
	tok := e.token(t, map[string]any{
		"sub": "u1", "email": "jane@example.com", "email_verified": true,
		"preferred_username": "jane", "groups": []string{"staff", "admins"}, "sid": "sid-1",
	})
	tokens := signInTokens(e.now)
	st, err := b.SignIn(t.Context(), tok, tokens, "sess-1", e.now)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != "sess-1" || st.Subject != "u1" || st.User != "u1" || st.Email != "jane@example.com" ||
		st.PreferredUsername != "jane" || !slices.Equal(st.Groups, []string{"staff", "admins"}) || st.SID != "sid-1" {
		t.Errorf("identity: %+v", st)
	}
	if !st.CreatedAt.Equal(e.now) || !st.ExpiresAt.Equal(e.now.Add(24*time.Hour)) {
		t.Errorf("times: created %v, expires %v", st.CreatedAt, st.ExpiresAt)
	}
	if !st.AccessExpiry.Equal(tokens.Expiry) || st.AccessLifetime != time.Hour {
		t.Errorf("access expiry %v, lifetime %v", st.AccessExpiry, st.AccessLifetime)
	}
	if got := st.Tokens(); got != (session.Tokens{AccessToken: "at-1", IDToken: "id-1", RefreshToken: "rt-1"}) {
		t.Errorf("tokens: %+v", got)
	}
	if st.ClaimsFromUserinfo {
		t.Error("ClaimsFromUserinfo set for an ID token that had every claim")
	}
	if calls := ui.calls(); len(calls) != 0 {
		t.Errorf("userinfo asked although the ID token had every claim: %v", calls)
	}
}

func TestSignInNumericCustomClaim(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(nil)
	b.Names.User = "employee_number"
	tok := e.token(t, map[string]any{
		"sub": "u1", "employee_number": 248289761001, "email": "e@example.com",
		"preferred_username": "p", "groups": "solo",
	})
	st, err := b.SignIn(t.Context(), tok, signInTokens(e.now), "s", e.now)
	if err != nil {
		t.Fatal(err)
	}
	if st.User != "248289761001" || st.Subject != "u1" || !slices.Equal(st.Groups, []string{"solo"}) {
		t.Errorf("User %q, Subject %q, Groups %q", st.User, st.Subject, st.Groups)
	}
}

func TestSignInFillsFromUserinfo(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"u1","email":"userinfo@example.com","preferred_username":"ui","groups":["from-userinfo"],"employee_number":248289761001}`)}
	b, _ := newBuilder(ui)
	// The ID token lacks groups; its email wins over userinfo's.
	tok := e.token(t, map[string]any{"sub": "u1", "email": "idtoken@example.com"})
	st, err := b.SignIn(t.Context(), tok, signInTokens(e.now), "s", e.now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ui.calls(), []string{"at-1"}) {
		t.Errorf("userinfo calls: %v", ui.calls())
	}
	if st.Email != "idtoken@example.com" || st.PreferredUsername != "ui" || !slices.Equal(st.Groups, []string{"from-userinfo"}) || st.User != "u1" {
		t.Errorf("identity: %+v", st)
	}
	if !st.ClaimsFromUserinfo {
		t.Error("ClaimsFromUserinfo not set")
	}

	// Numeric userinfo claims are kept as written too.
	b.Names.User = "employee_number"
	st, err = b.SignIn(t.Context(), e.token(t, map[string]any{"sub": "u1"}), signInTokens(e.now), "s", e.now)
	if err != nil {
		t.Fatal(err)
	}
	if st.User != "248289761001" {
		t.Errorf("User from userinfo = %q", st.User)
	}
}

func TestSignInUserinfoForAnotherSubject(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"someone-else","groups":["admins"]}`)}
	b, _ := newBuilder(ui)
	st, err := b.SignIn(t.Context(), e.token(t, map[string]any{"sub": "u1"}), signInTokens(e.now), "s", e.now)
	if !errors.Is(err, ErrUserinfoSubject) || st != nil {
		t.Errorf("got %v, %v; want ErrUserinfoSubject", st, err)
	}
}

func TestSignInUserinfoFailing(t *testing.T) {
	e := newIDP(t)
	for name, ui := range map[string]UserinfoSource{
		"endpoint fails": &fakeUserinfo{err: errors.New("userinfo: 503")},
		"no endpoint":    nil,
	} {
		t.Run(name, func(t *testing.T) {
			b, logs := newBuilder(ui)
			tok := e.token(t, map[string]any{"sub": "u1", "email": "e@example.com", "sid": "sid-9"})
			st, err := b.SignIn(t.Context(), tok, signInTokens(e.now), "s", e.now)
			if err != nil {
				t.Fatalf("sign-in failed with userinfo: %v", err)
			}
			if st.ClaimsFromUserinfo {
				t.Error("ClaimsFromUserinfo set although userinfo failed")
			}
			if st.Email != "e@example.com" || st.Groups != nil || st.PreferredUsername != "" || st.SID != "sid-9" {
				t.Errorf("identity: %+v", st)
			}
			if !strings.Contains(logs.String(), "userinfo failed") {
				t.Errorf("no warning logged: %q", logs.String())
			}
		})
	}
}

func TestSignInWithoutAccessTokenSkipsUserinfo(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"u1","groups":["g"]}`)}
	b, _ := newBuilder(ui)
	tokens := signInTokens(e.now)
	tokens.AccessToken = ""
	st, err := b.SignIn(t.Context(), e.token(t, map[string]any{"sub": "u1"}), tokens, "s", e.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ui.calls()) != 0 || st.ClaimsFromUserinfo || st.Groups != nil {
		t.Errorf("userinfo asked without an access token: calls %v, %+v", ui.calls(), st)
	}
}

func TestSignInKeep(t *testing.T) {
	e := newIDP(t)
	tests := []struct {
		keep Keep
		want session.Tokens
	}{
		{Keep{}, session.Tokens{}},
		{Keep{AccessToken: true}, session.Tokens{AccessToken: "at-1"}},
		{Keep{IDToken: true}, session.Tokens{IDToken: "id-1"}},
		{Keep{RefreshToken: true}, session.Tokens{RefreshToken: "rt-1"}},
		{Keep{IDToken: true, RefreshToken: true}, session.Tokens{IDToken: "id-1", RefreshToken: "rt-1"}},
	}
	tok := e.token(t, map[string]any{"sub": "u1", "email": "e", "preferred_username": "p", "groups": []string{}})
	for _, tt := range tests {
		b, _ := newBuilder(nil)
		b.Keep = tt.keep
		st, err := b.SignIn(t.Context(), tok, signInTokens(e.now), "s", e.now)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Tokens(); got != tt.want {
			t.Errorf("Keep %+v: tokens %+v, want %+v", tt.keep, got, tt.want)
		}
		// The expiry is recorded whether or not the access token is kept.
		if !st.AccessExpiry.Equal(e.now.Add(time.Hour)) || st.AccessLifetime != time.Hour {
			t.Errorf("Keep %+v: access expiry %v, lifetime %v", tt.keep, st.AccessExpiry, st.AccessLifetime)
		}
	}
}

// --- Refreshed ---------------------------------------------------------------

// signedIn is a session as a cookie brings it (decoded, tokens still encoded).
func signedIn(t *testing.T, now time.Time, mutate func(*session.State)) *session.State {
	t.Helper()
	st := &session.State{
		ID: "sess-1", Subject: "u1", User: "u1", Email: "old@example.com", PreferredUsername: "old",
		Groups: []string{"staff", "admins"}, SID: "sid-1",
		CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(23 * time.Hour),
		AccessExpiry: now.Add(30 * time.Second), AccessLifetime: time.Hour,
	}
	st.SetTokens(session.Tokens{AccessToken: "at-1", IDToken: "id-1", RefreshToken: "rt-1"})
	if mutate != nil {
		mutate(st)
	}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	loaded := new(session.State)
	if err := loaded.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return loaded
}

func refreshTokens(now time.Time, idToken string) *provider.Tokens {
	return &provider.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", IDToken: idToken, Expiry: now.Add(2 * time.Hour), Lifetime: 2 * time.Hour}
}

// unchanged fails the test if prev changed since snapshot was taken.
func unchanged(t *testing.T, prev *session.State, snapshot []byte, groups []string) {
	t.Helper()
	now, err := prev.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(now, snapshot) {
		t.Error("Refreshed wrote the previous state")
	}
	if !slices.Equal(prev.Groups, groups) {
		t.Errorf("previous state's groups changed to %q", prev.Groups)
	}
}

func snapshot(t *testing.T, st *session.State) ([]byte, []string) {
	t.Helper()
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b, slices.Clone(st.Groups)
}

func TestRefreshedClaimsWinEvenEmpty(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(&fakeUserinfo{err: errors.New("must not be asked")})
	prev := signedIn(t, e.now, nil)
	snap, groups := snapshot(t, prev)
	tok := e.token(t, map[string]any{
		"sub": "u1", "groups": []string{}, "email": "new@example.com", "email_verified": false,
		"preferred_username": "new", "sid": "sid-2",
	})
	tokens := refreshTokens(e.now, "id-2")
	next, err := b.Refreshed(t.Context(), prev, tok, tokens)
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Groups) != 0 {
		t.Errorf(`"groups": [] kept the groups %q`, next.Groups)
	}
	if next.Email != "" {
		t.Errorf("email_verified false kept the email %q", next.Email)
	}
	if next.PreferredUsername != "new" || next.User != "u1" || next.SID != "sid-2" {
		t.Errorf("identity: %+v", next)
	}
	// The rest carries over.
	if next.ID != prev.ID || next.Subject != prev.Subject || !next.CreatedAt.Equal(prev.CreatedAt) || !next.ExpiresAt.Equal(prev.ExpiresAt) {
		t.Errorf("carried over: %+v", next)
	}
	if got := next.Tokens(); got != (session.Tokens{AccessToken: "at-2", IDToken: "id-2", RefreshToken: "rt-2"}) {
		t.Errorf("tokens %+v", got)
	}
	if !next.AccessExpiry.Equal(tokens.Expiry) || next.AccessLifetime != tokens.Lifetime {
		t.Errorf("access expiry %v, lifetime %v", next.AccessExpiry, next.AccessLifetime)
	}
	unchanged(t, prev, snap, groups)
}

func TestRefreshedUnstatedClaimsKeepTheirValues(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(nil)
	prev := signedIn(t, e.now, nil)
	// An ID token with sub only (and no sid): everything else stays.
	next, err := b.Refreshed(t.Context(), prev, e.token(t, map[string]any{"sub": "u1"}), refreshTokens(e.now, "id-2"))
	if err != nil {
		t.Fatal(err)
	}
	if next.Email != "old@example.com" || next.PreferredUsername != "old" || !slices.Equal(next.Groups, []string{"staff", "admins"}) || next.SID != "sid-1" {
		t.Errorf("identity: %+v", next)
	}
}

func TestRefreshedWithoutIDToken(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{err: errors.New("must not be asked")}
	b, _ := newBuilder(ui)
	prev := signedIn(t, e.now, nil)
	snap, groups := snapshot(t, prev)
	next, err := b.Refreshed(t.Context(), prev, nil, refreshTokens(e.now, ""))
	if err != nil {
		t.Fatal(err)
	}
	if next == prev {
		t.Fatal("Refreshed returned the previous state")
	}
	if next.User != "u1" || next.Email != "old@example.com" || next.PreferredUsername != "old" ||
		!slices.Equal(next.Groups, []string{"staff", "admins"}) || next.SID != "sid-1" {
		t.Errorf("identity not kept: %+v", next)
	}
	// The old ID token stays (for id_token_hint), the refresh token is the new one.
	if got := next.Tokens(); got != (session.Tokens{AccessToken: "at-2", IDToken: "id-1", RefreshToken: "rt-2"}) {
		t.Errorf("tokens %+v", got)
	}
	if len(ui.calls()) != 0 {
		t.Errorf("userinfo asked for a session whose claims came from the ID token: %v", ui.calls())
	}
	unchanged(t, prev, snap, groups)

	// Without Keep.IDToken the old one is not carried over.
	b.Keep.IDToken = false
	next, err = b.Refreshed(t.Context(), prev, nil, refreshTokens(e.now, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := next.Tokens(); got != (session.Tokens{AccessToken: "at-2", RefreshToken: "rt-2"}) {
		t.Errorf("Keep.IDToken false: tokens %+v", got)
	}
}

func TestRefreshedOtherSubject(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(nil)
	prev := signedIn(t, e.now, nil)
	snap, groups := snapshot(t, prev)
	next, err := b.Refreshed(t.Context(), prev, e.token(t, map[string]any{"sub": "intruder"}), refreshTokens(e.now, "id-2"))
	if !errors.Is(err, ErrSubject) || next != nil {
		t.Errorf("got %v, %v; want ErrSubject", next, err)
	}
	unchanged(t, prev, snap, groups)
}

func TestRefreshedRereadsUserinfo(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"u1","email":"ui@example.com","preferred_username":"ui","groups":["new-group"]}`)}
	b, _ := newBuilder(ui)
	prev := signedIn(t, e.now, func(st *session.State) { st.ClaimsFromUserinfo = true })
	snap, groups := snapshot(t, prev)

	// A new ID token without groups: they come from userinfo; its
	// preferred_username wins over userinfo's.
	next, err := b.Refreshed(t.Context(), prev, e.token(t, map[string]any{"sub": "u1", "preferred_username": "tok"}), refreshTokens(e.now, "id-2"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ui.calls(), []string{"at-2"}) {
		t.Errorf("userinfo calls %v, want one with the new access token", ui.calls())
	}
	if !slices.Equal(next.Groups, []string{"new-group"}) || next.Email != "ui@example.com" || next.PreferredUsername != "tok" {
		t.Errorf("identity: %+v", next)
	}
	if !next.ClaimsFromUserinfo {
		t.Error("ClaimsFromUserinfo lost")
	}
	unchanged(t, prev, snap, groups)

	// Without a new ID token, too.
	next, err = b.Refreshed(t.Context(), prev, nil, refreshTokens(e.now, ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(ui.calls()) != 2 || next.PreferredUsername != "ui" || !slices.Equal(next.Groups, []string{"new-group"}) {
		t.Errorf("without an ID token: calls %v, %+v", ui.calls(), next)
	}
}

func TestRefreshedUserinfoFailureKeepsOldValues(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{err: errors.New("userinfo: 503")}
	b, logs := newBuilder(ui)
	prev := signedIn(t, e.now, func(st *session.State) { st.ClaimsFromUserinfo = true })
	next, err := b.Refreshed(t.Context(), prev, e.token(t, map[string]any{"sub": "u1", "email": "tok@example.com"}), refreshTokens(e.now, "id-2"))
	if err != nil {
		t.Fatalf("a userinfo failure ended the refresh: %v", err)
	}
	if len(ui.calls()) != 1 {
		t.Errorf("userinfo calls %v", ui.calls())
	}
	if next.Email != "tok@example.com" || next.PreferredUsername != "old" || !slices.Equal(next.Groups, []string{"staff", "admins"}) {
		t.Errorf("identity: %+v", next)
	}
	if next.Tokens().RefreshToken != "rt-2" {
		t.Errorf("the new tokens were not kept: %+v", next.Tokens())
	}
	if !next.ClaimsFromUserinfo {
		t.Error("ClaimsFromUserinfo lost: the next refresh would not read userinfo again")
	}
	if !strings.Contains(logs.String(), "userinfo failed during a refresh") {
		t.Errorf("no warning logged: %q", logs.String())
	}
}

func TestRefreshedUserinfoForAnotherSubject(t *testing.T) {
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"intruder","groups":["admins"]}`)}
	b, _ := newBuilder(ui)
	prev := signedIn(t, e.now, func(st *session.State) { st.ClaimsFromUserinfo = true })
	next, err := b.Refreshed(t.Context(), prev, nil, refreshTokens(e.now, ""))
	if !errors.Is(err, ErrUserinfoSubject) || next != nil {
		t.Errorf("got %v, %v; want ErrUserinfoSubject", next, err)
	}
}

func TestRefreshedIDTokenApart(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(nil)
	prev := signedIn(t, e.now, func(st *session.State) {
		st.IDTokenApart = true
		st.SetTokens(session.Tokens{AccessToken: "at-1", RefreshToken: "rt-1"})
	})
	snap, groups := snapshot(t, prev)
	for _, raw := range []string{"id-2", ""} {
		var tok *oidc.IDToken
		if raw != "" {
			tok = e.token(t, map[string]any{"sub": "u1"})
		}
		next, err := b.Refreshed(t.Context(), prev, tok, refreshTokens(e.now, raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := next.Tokens(); got != (session.Tokens{AccessToken: "at-2", RefreshToken: "rt-2"}) {
			t.Errorf("new ID token %q: tokens %+v, want no ID token in the state", raw, got)
		}
		if !next.IDTokenApart {
			t.Error("IDTokenApart lost")
		}
	}
	unchanged(t, prev, snap, groups)
}

func TestRefreshedLeavesPrevAloneConcurrently(t *testing.T) {
	// Every check that waited for a refresh holds prev: building the next
	// session must only read it (run with -race).
	e := newIDP(t)
	ui := &fakeUserinfo{info: userinfoAnswer(t, `{"sub":"u1","groups":["g2"],"email":"x@example.com"}`)}
	b, _ := newBuilder(ui)
	prev := signedIn(t, e.now, func(st *session.State) { st.ClaimsFromUserinfo = true })
	snap, groups := snapshot(t, prev)
	tok := e.token(t, map[string]any{"sub": "u1", "preferred_username": "p2", "sid": "sid-2"})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				next, err := b.Refreshed(t.Context(), prev, tok, refreshTokens(e.now, "id-2"))
				if err != nil || next.PreferredUsername != "p2" {
					t.Errorf("Refreshed: %v, %+v", err, next)
				}
				return
			}
			// Readers of prev, as the other checks are.
			if prev.Tokens().RefreshToken != "rt-1" || prev.RefreshToken() != "rt-1" || prev.PreferredUsername != "old" || len(prev.Groups) != 2 {
				t.Errorf("prev read %+v", prev)
			}
		})
	}
	wg.Wait()
	unchanged(t, prev, snap, groups)
}

// --- Bearer --------------------------------------------------------------------

func TestBearer(t *testing.T) {
	e := newIDP(t)
	b, _ := newBuilder(&fakeUserinfo{err: errors.New("must not be asked")})
	b.Names.User = "preferred_username"
	tok := e.token(t, map[string]any{
		"sub": "svc-1", "preferred_username": "robot", "email": "robot@example.com", "email_verified": "false",
		"groups": "deployers",
	})
	st, err := b.Bearer(tok)
	if err != nil {
		t.Fatal(err)
	}
	if st.Subject != "svc-1" || st.User != "robot" || st.Email != "" || st.PreferredUsername != "robot" || !slices.Equal(st.Groups, []string{"deployers"}) {
		t.Errorf("bearer session: %+v", st)
	}
	if st.ID != "" || st.Tokens() != (session.Tokens{}) || !st.ExpiresAt.IsZero() || st.ClaimsFromUserinfo {
		t.Errorf("a bearer session keeps no tokens, ID or times: %+v", st)
	}
}
