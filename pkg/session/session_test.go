package session

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func newTestStore(t testing.TB, now *time.Time, secrets ...[]byte) *Store {
	t.Helper()
	if len(secrets) == 0 {
		secrets = [][]byte{testSecret(1)}
	}
	codec, err := NewCodec(secrets, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(codec, Options{Name: "_extauth", Secure: true, SameSite: http.SameSiteLaxMode}, func() time.Time { return *now })
}

// stateFromTokenSet builds the session a sign-in with that token set makes,
// claims taken from its ID token as the callback does.
func stateFromTokenSet(t testing.TB, name string) *State {
	t.Helper()
	ts := testenv.LoadTokenSet(t, name)
	parts := strings.Split(ts.IDToken, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Sub               string   `json:"sub"`
		Email             string   `json:"email"`
		PreferredUsername string   `json:"preferred_username"`
		Groups            []string `json:"groups"`
		SID               string   `json:"sid"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return &State{
		ID:      "3f2b8c1e-7d4a-4b6e-9c0f-1a2b3c4d5e6f", // as the callback makes it
		Subject: claims.Sub, User: claims.Sub, Email: claims.Email,
		PreferredUsername: claims.PreferredUsername, Groups: claims.Groups, SID: claims.SID,
		tokens:       Tokens{AccessToken: ts.AccessToken, IDToken: ts.IDToken, RefreshToken: ts.RefreshToken},
		AccessExpiry: t0.Add(time.Duration(ts.ExpiresIn) * time.Second),
		CreatedAt:    t0, ExpiresAt: t0.Add(168 * time.Hour),
	}
}

// requestWith returns a request carrying the cookies a response set.
func requestWith(rec *httptest.ResponseRecorder) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/oauth2/auth", nil)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge >= 0 {
			r.AddCookie(c)
		}
	}
	return r
}

func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		st   State
	}{
		{"empty", State{}},
		{"claims only", State{Subject: "u1", User: "u1", Email: "a@b.c", Groups: []string{"x", "y"}, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"user differs from sub", State{Subject: "u1", User: "alice", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"opaque tokens", State{Subject: "s", User: "s", tokens: Tokens{AccessToken: "opaque==", RefreshToken: "r.t", IDToken: "a.b.c.d"}}},
		{"not canonical base64 stays verbatim", State{Subject: "s", User: "s", tokens: Tokens{AccessToken: "eyJ.eyJ.abd", IDToken: "a\n.b.c"}}},
		{"compact JWTs", State{Subject: "s", User: "s", tokens: Tokens{AccessToken: "eyJh.eyJi.c2ln", IDToken: "YQ.Yg.Yw", RefreshToken: "x"}}},
		{"shared JWT headers", State{Subject: "s", User: "s", tokens: Tokens{AccessToken: "eyJh.eyJi.c2ln", IDToken: "eyJh.eyJj.c2lo", RefreshToken: "eyJh.eyJr.c2lp"}}},
		{"shared header after an opaque token", State{tokens: Tokens{AccessToken: "opaque", IDToken: "eyJh.eyJj.c2lo", RefreshToken: "eyJh.eyJr.c2lp"}}},
		{"UUID identifiers", State{ID: "3f2b8c1e-7d4a-4b6e-9c0f-1a2b3c4d5e6f", Subject: "f1e2d3c4-b5a6-4789-8abc-def012345678", User: "f1e2d3c4-b5a6-4789-8abc-def012345678", SID: "4f6d1c2a-9b7e-4e0f-8a3d-2c5b7e9f1a04"}},
		{"UUID-like but uppercase stays text", State{Subject: "F1E2D3C4-B5A6-4789-8ABC-DEF012345678", User: "x", SID: "4f6d1c2a-9b7e-4e0f-8a3d-2c5b7e9f1a0"}},
		{"access lifetime and userinfo claims", State{Subject: "s", User: "s", AccessExpiry: t0.Add(time.Minute), AccessLifetime: time.Minute, ClaimsFromUserinfo: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.st.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got State
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			want := tc.st
			if want.User == "" {
				want.User = want.Subject
			}
			if !equalState(&got, &want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestStateReadsAreConcurrencySafe: a refreshed state is shared by every
// check that waited for it; reading its tokens must not write it (run
// under -race, this failed while Tokens cached what it decoded).
func TestStateReadsAreConcurrencySafe(t *testing.T) {
	st := stateFromTokenSet(t, "okta")
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var shared State
	if err := shared.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	want := st.Tokens()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got := shared.Tokens(); got != want {
				t.Error("tokens differ")
			}
			if _, err := shared.MarshalBinary(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// equalState compares every field, tokens included (decoding them if needed).
func TestCompactEncodingSavesBytes(t *testing.T) {
	plain := State{Subject: "x", tokens: Tokens{AccessToken: "eyJh.eyJi.c2ln", IDToken: "eyJh.eyJj.c2lo"}}
	uuid := State{Subject: "f1e2d3c4-b5a6-4789-8abc-def012345678"}
	text := State{Subject: "f1e2d3c4_b5a6_4789_8abc_def012345678"}
	a, _ := plain.MarshalBinary()
	plain.tokens.IDToken = "eyJk.eyJj.c2lo" // another header
	b, _ := plain.MarshalBinary()
	if len(a) >= len(b) {
		t.Errorf("a shared header is stored again: %d vs %d bytes", len(a), len(b))
	}
	u, _ := uuid.MarshalBinary()
	x, _ := text.MarshalBinary()
	if len(x)-len(u) < 19 {
		t.Errorf("a UUID sub takes %d bytes, text %d", len(u), len(x))
	}
}

func equalState(a, b *State) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb) && a.Tokens() == b.Tokens()
}

// TestTokenSetSizes is the size contract: Okta and Keycloak sessions with all
// three tokens fit one cookie of at most 4,000 bytes; Entra's is split and
// reassembled. It prints the figures.
func TestTokenSetSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wantParts int
	}{
		{"okta", 1}, {"keycloak", 1}, {"entra", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			store := newTestStore(t, &now)
			st := stateFromTokenSet(t, tc.name)
			rec := httptest.NewRecorder()
			n, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st)
			if err != nil {
				t.Fatal(err)
			}
			headers := rec.Header().Values("Set-Cookie")
			cookieBytes := 0
			for _, c := range rec.Result().Cookies() {
				if len(c.Name)+1+len(c.Value) > DefaultMaxCookieBytes {
					t.Errorf("cookie %s is %d bytes, over %d", c.Name, len(c.Name)+1+len(c.Value), DefaultMaxCookieBytes)
				}
				cookieBytes += len(c.Name) + 1 + len(c.Value)
			}
			tok := st.Tokens()
			tokens := len(tok.AccessToken) + len(tok.IDToken) + len(tok.RefreshToken)
			t.Logf("%-8s tokens %5d B -> encoded %5d B in %d cookie(s), %d B of name=value, Set-Cookie lines %v B",
				tc.name, tokens, n, len(headers), cookieBytes, lineLens(headers))
			if tc.wantParts > 0 && len(headers) != tc.wantParts {
				t.Errorf("got %d cookies, want %d", len(headers), tc.wantParts)
			}
			got, err := store.Load(requestWith(rec))
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if !equalState(got, st) {
				t.Error("loaded state differs from saved")
			}
		})
	}
}

func lineLens(h []string) []int {
	var out []int
	for _, l := range h {
		out = append(out, len(l))
	}
	return out
}

func TestSplitAndShrinkClearsStaleParts(t *testing.T) {
	now := t0
	store := newTestStore(t, &now)
	store.opts.MaxCookieBytes = 600 // force splitting with small states
	big := stateFromTokenSet(t, "okta")
	rec := httptest.NewRecorder()
	if _, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), big); err != nil {
		t.Fatal(err)
	}
	parts := rec.Result().Cookies()
	if len(parts) < 3 || parts[0].Name != "_extauth_0" {
		t.Fatalf("want ≥3 parts starting with _extauth_0, got %d (%v)", len(parts), parts[0].Name)
	}
	req := requestWith(rec)
	if _, err := store.Load(req); err != nil {
		t.Fatalf("load split: %v", err)
	}

	// The session shrinks to one cookie: every old part is expired.
	small := &State{Subject: "s", User: "s", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	rec2 := httptest.NewRecorder()
	if _, err := store.Save(rec2, req, small); err != nil {
		t.Fatal(err)
	}
	set := rec2.Result().Cookies()
	if set[0].Name != "_extauth" || set[0].MaxAge <= 0 {
		t.Fatalf("first Set-Cookie must be the session: %+v", set[0])
	}
	expired := map[string]bool{}
	for _, c := range set[1:] {
		if c.MaxAge < 0 {
			expired[c.Name] = true
		}
	}
	for _, p := range parts {
		if !expired[p.Name] {
			t.Errorf("stale part %s not cleared", p.Name)
		}
	}

	// A part missing in the middle is no session, not a crash.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(parts[0])
	r.AddCookie(parts[2])
	if _, err := store.Load(r); !errors.Is(err, ErrInvalid) {
		t.Errorf("gap in parts: got %v, want ErrInvalid", err)
	}
}

func TestClearExpiresEveryPart(t *testing.T) {
	now := t0
	store := newTestStore(t, &now)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "_extauth_0=a; _extauth_1=b; other=c; _extauth_csrf=d")
	rec := httptest.NewRecorder()
	store.Clear(rec, r)
	got := map[string]int{}
	for _, c := range rec.Result().Cookies() {
		got[c.Name] = c.MaxAge
	}
	for _, name := range []string{"_extauth_0", "_extauth_1", "_extauth"} {
		if got[name] >= 0 {
			t.Errorf("%s not expired: %v", name, got)
		}
	}
	if _, ok := got["other"]; ok {
		t.Error("cleared a cookie that is not ours")
	}
	if _, ok := got["_extauth_csrf"]; ok {
		t.Error("cleared the flow cookie")
	}
}

func TestHostileCookiesAreInvalid(t *testing.T) {
	now := t0
	store := newTestStore(t, &now)
	rec := httptest.NewRecorder()
	if _, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), stateFromTokenSet(t, "okta")); err != nil {
		t.Fatal(err)
	}
	good := rec.Result().Cookies()[0].Value
	flip := []byte(good)
	flip[len(flip)/2] ^= 1
	if flip[len(flip)/2] == '.' || flip[len(flip)/2] == '/' {
		flip[len(flip)/2] = 'A'
	}
	garbage := make([]byte, 10<<10)
	for i := range garbage {
		garbage[i] = "ABCDEFGHabcdefgh0123456789-_"[i%28]
	}
	otherStore := newTestStore(t, &now, testSecret(9))
	rec2 := httptest.NewRecorder()
	if _, err := otherStore.Save(rec2, httptest.NewRequest(http.MethodGet, "/", nil), stateFromTokenSet(t, "okta")); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"tampered":         string(flip),
		"truncated":        good[:len(good)-10],
		"truncated short":  good[:8],
		"extended":         good + "AAAA",
		"empty":            "",
		"10KB garbage":     string(garbage),
		"not base64":       "!!!***",
		"other secret":     rec2.Result().Cookies()[0].Value,
		"quoted garbage":   `"abc"`,
		"padding":          good + "==",
		"single byte":      "A",
		"nonce only":       base64.RawURLEncoding.EncodeToString(make([]byte, 12)),
		"nonce and tag":    base64.RawURLEncoding.EncodeToString(make([]byte, 29)),
		"embedded newline": good[:20] + "\n" + good[20:],
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Cookie", "_extauth="+value)
			st, err := store.Load(r)
			if err == nil || st != nil {
				t.Fatalf("accepted a hostile cookie")
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNoSession) {
				t.Errorf("got %v, want ErrInvalid or ErrNoSession", err)
			}
		})
	}
}

func TestNameIsBound(t *testing.T) {
	codec, _ := NewCodec([][]byte{testSecret(1)}, rand.Reader)
	v, err := codec.Encode("_extauth_csrf", Flows{{State: "s", Expires: t0}})
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := codec.Decode("_extauth", v, &st); !errors.Is(err, ErrInvalid) {
		t.Errorf("a flow cookie value decoded as a session: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	now := t0
	old := newTestStore(t, &now, testSecret(1))
	rec := httptest.NewRecorder()
	st := &State{Subject: "s", User: "s", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := old.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st); err != nil {
		t.Fatal(err)
	}
	rotated := newTestStore(t, &now, testSecret(2), testSecret(1))
	if _, err := rotated.Load(requestWith(rec)); err != nil {
		t.Fatalf("second secret must still decode: %v", err)
	}
	rec2 := httptest.NewRecorder()
	if _, err := rotated.Save(rec2, httptest.NewRequest(http.MethodGet, "/", nil), st); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Load(requestWith(rec2)); !errors.Is(err, ErrInvalid) {
		t.Errorf("the first secret must encode: old store decoded it (%v)", err)
	}
	if _, err := NewCodec([][]byte{make([]byte, 16)}, rand.Reader); err == nil {
		t.Error("a 16-byte secret was accepted")
	}
}

func TestExpiryUsesOurClock(t *testing.T) {
	now := t0
	store := newTestStore(t, &now)
	rec := httptest.NewRecorder()
	st := &State{Subject: "s", User: "s", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st); err != nil {
		t.Fatal(err)
	}
	req := requestWith(rec)
	now = t0.Add(59 * time.Minute)
	if _, err := store.Load(req); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	now = t0.Add(time.Hour)
	if _, err := store.Load(req); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: got %v, want ErrExpired", err)
	}
}

func TestFlowsSeveralTabs(t *testing.T) {
	now := t0
	codec, _ := NewCodec([][]byte{testSecret(1)}, rand.Reader)
	fs := NewFlowStore(codec, Options{Name: "_extauth", SameSite: http.SameSiteStrictMode}, func() time.Time { return now })
	// Tab A and tab B start; B's request carries A's cookie.
	recA := httptest.NewRecorder()
	if err := fs.Add(recA, fs.Load(httptest.NewRequest(http.MethodGet, "/", nil)), Flow{State: "A", Expires: now.Add(FlowTTL)}); err != nil {
		t.Fatal(err)
	}
	if c := recA.Result().Cookies()[0]; c.Name != "_extauth_csrf" || c.SameSite != http.SameSiteLaxMode || !c.HttpOnly || c.MaxAge != 900 {
		t.Fatalf("flow cookie attributes: %+v", c)
	}
	recB := httptest.NewRecorder()
	if err := fs.Add(recB, fs.Load(requestWith(recA)), Flow{State: "B", Expires: now.Add(FlowTTL)}); err != nil {
		t.Fatal(err)
	}
	// B completes first, then A with the cookie B's callback left.
	recCB := httptest.NewRecorder()
	if f, ok := fs.Take(recCB, fs.Load(requestWith(recB)), "B"); !ok || f.State != "B" {
		t.Fatal("flow B not found")
	}
	recCA := httptest.NewRecorder()
	if f, ok := fs.Take(recCA, fs.Load(requestWith(recCB)), "A"); !ok || f.State != "A" {
		t.Fatal("flow A not found after B completed")
	}
	if c := recCA.Result().Cookies()[0]; c.MaxAge >= 0 {
		t.Error("flow cookie not cleared after the last flow")
	}
	// Expired flows are dropped.
	now = now.Add(FlowTTL)
	if got := fs.Load(requestWith(recB)); len(got) != 0 {
		t.Errorf("expired flows still loaded: %d", len(got))
	}
}

func TestFlowsBounded(t *testing.T) {
	now := t0
	codec, _ := NewCodec([][]byte{testSecret(1)}, rand.Reader)
	fs := NewFlowStore(codec, Options{Name: "_extauth"}, func() time.Time { return now })
	var req = httptest.NewRequest(http.MethodGet, "/", nil)
	for i := range 20 {
		rec := httptest.NewRecorder()
		long := "/" + strings.Repeat("x", 1000)
		if err := fs.Add(rec, fs.Load(req), Flow{State: string(rune('a' + i)), ReturnURL: long, Expires: now.Add(FlowTTL)}); err != nil {
			t.Fatal(err)
		}
		c := rec.Result().Cookies()[0]
		if len(c.Value) > maxFlowCookieBytes {
			t.Fatalf("flow cookie grew to %d bytes", len(c.Value))
		}
		req = requestWith(rec)
	}
	flows := fs.Load(req)
	if len(flows) == 0 || len(flows) > maxFlows || flows[len(flows)-1].State != string(rune('a'+19)) {
		t.Errorf("want the newest flows kept, got %d", len(flows))
	}
}

func TestCookieValueParsing(t *testing.T) {
	h := http.Header{"Cookie": {`a=1; _extauth="q"`, "_extauth=second"}}
	if v, ok := cookieValue(h, "_extauth"); !ok || v != "q" {
		t.Errorf("got %q %v", v, ok)
	}
	if _, ok := cookieValue(h, "_ext"); ok {
		t.Error("prefix matched")
	}
}

// TestEntraRefreshFitsOneSetCookie: with the access token optional, an
// Entra-sized session keeps its ID token apart, so that a later save (a
// refresh) is one Set-Cookie — all nginx's auth_request_set passes on — and
// the ID token stays readable for sign-out.
func TestEntraRefreshFitsOneSetCookie(t *testing.T) {
	now := t0
	store := newTestStore(t, &now)
	store.opts.AccessTokenOptional = true
	st := stateFromTokenSet(t, "entra")
	idToken := st.Tokens().IDToken
	rec := httptest.NewRecorder()
	n, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	total := 0
	for _, c := range rec.Result().Cookies() {
		names = append(names, c.Name)
		total += len(c.Name) + 1 + len(c.Value)
		if len(c.Name)+1+len(c.Value) > DefaultMaxCookieBytes {
			t.Errorf("%s is %d bytes", c.Name, len(c.Name)+1+len(c.Value))
		}
	}
	t.Logf("entra, ID token apart, access token left out: %d B encoded, cookies %v, %d B of name=value", n, names, total)
	if len(names) != 2 || names[0] != "_extauth" || names[1] != "_extauth_id" {
		t.Fatalf("cookies %v, want [_extauth _extauth_id]", names)
	}
	req := requestWith(rec)
	loaded, err := store.Load(req)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.IDTokenApart || loaded.Tokens().AccessToken != "" || loaded.Tokens().RefreshToken != st.Tokens().RefreshToken {
		t.Errorf("loaded: apart %v, access %d B, refresh ok %v", loaded.IDTokenApart, len(loaded.Tokens().AccessToken), loaded.Tokens().RefreshToken == st.Tokens().RefreshToken)
	}
	if got := store.IDToken(req, loaded); got != idToken {
		t.Error("the ID token kept apart cannot be read back")
	}

	// A refresh: new refresh token, the same layout, one Set-Cookie, and the
	// ID token's cookie left alone.
	loaded.SetTokens(Tokens{RefreshToken: "rotated-" + st.Tokens().RefreshToken, AccessToken: st.Tokens().AccessToken})
	rec2 := httptest.NewRecorder()
	if _, err := store.Save(rec2, req, loaded); err != nil {
		t.Fatal(err)
	}
	lines := rec2.Header().Values("Set-Cookie")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "_extauth=") {
		t.Fatalf("refresh wrote %d Set-Cookie lines: %.40q", len(lines), lines)
	}
	// The browser now has the new _extauth and the old _extauth_id.
	req2 := requestWith(rec2)
	for _, c := range req.Cookies() {
		if c.Name == "_extauth_id" {
			req2.AddCookie(c)
		}
	}
	again, err := store.Load(req2)
	if err != nil || again.Tokens().RefreshToken != "rotated-"+st.Tokens().RefreshToken {
		t.Fatalf("after refresh: %v", err)
	}
	if store.IDToken(req2, again) != idToken {
		t.Error("ID token lost across the refresh")
	}
	// Clear removes both.
	rec3 := httptest.NewRecorder()
	store.Clear(rec3, req2)
	cleared := map[string]bool{}
	for _, c := range rec3.Result().Cookies() {
		cleared[c.Name] = c.MaxAge < 0
	}
	if !cleared["_extauth"] || !cleared["_extauth_id"] {
		t.Errorf("clear: %v", cleared)
	}
}

// TestCodecForApp: a value sealed for one app opens only for that app, and
// an unbound codec opens neither.
func TestCodecForApp(t *testing.T) {
	c, err := NewCodec([][]byte{make([]byte, 32)}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.For("grafana"), c.For("wiki")
	v, err := a.Seal("_extauth", []byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Open("_extauth", v); err != nil || string(got) != "state" {
		t.Fatalf("own app: %q, %v", got, err)
	}
	for name, other := range map[string]*Codec{"other app": b, "unbound": c, "app named with the NUL": c.For("grafana\x00_extauth")} {
		if _, err := other.Open("_extauth", v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s opened grafana's cookie: %v", name, err)
		}
	}
	plain, _ := c.Seal("_extauth", []byte("state"))
	if _, err := a.Open("_extauth", plain); !errors.Is(err, ErrInvalid) {
		t.Errorf("an app opened the unbound cookie: %v", err)
	}
}

// TestStateClaimsRoundTrip: kept claims survive the encoding, in a stable
// order; a state without them encodes as before.
func TestStateClaimsRoundTrip(t *testing.T) {
	st := &State{ID: "id", Subject: "sub", Claims: map[string][]string{"department": {"platform"}, "acr": {"silver"}, "roles": {"a", "b"}}}
	b1, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := st.MarshalBinary()
	if !bytes.Equal(b1, b2) {
		t.Error("the same state encodes differently")
	}
	var got State
	if err := got.UnmarshalBinary(b1); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Claims, st.Claims) {
		t.Errorf("claims = %v, want %v", got.Claims, st.Claims)
	}
	plain, _ := (&State{ID: "id", Subject: "sub"}).MarshalBinary()
	if plain[1]&flagClaims != 0 {
		t.Error("a state without claims sets the claims flag")
	}
}
