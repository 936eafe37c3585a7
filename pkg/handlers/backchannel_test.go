package handlers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

const backchannelPath = "/oauth2/backchannel_logout"

// backchannelPostTo POSTs a form to the back-channel endpoint of router.
func backchannelPostTo(t testing.TB, router *gin.Engine, form url.Values) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, backchannelPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Host = "idp-caller.internal"
	rec := httptest.NewRecorder()
	router.ServeHTTP(rec, req)
	return rec
}

// backchannelPost sends a logout token as the provider does.
func (e *testEnv) backchannelPost(token string) *httptest.ResponseRecorder {
	e.t.Helper()
	return backchannelPostTo(e.t, e.router, url.Values{"logout_token": {token}})
}

// backchannelSession decodes the session a browser's cookies carry.
func (e *testEnv) backchannelSession(j jar) *session.State {
	e.t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, c := range j.list() {
		req.AddCookie(c)
	}
	st, err := e.sessions.Load(req)
	if err != nil {
		e.t.Fatalf("load session: %v", err)
	}
	return st
}

func backchannelCount(e *testEnv, result string) float64 {
	return testutil.ToFloat64(e.metrics.BackchannelLogouts.WithLabelValues(result))
}

// unsignedJWT builds a token with header {"alg":"none"} by hand.
func unsignedJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(payload) + "."
}

// sessionCleared reports whether a check's answer expires the session cookie.
func sessionCleared(rec *httptest.ResponseRecorder) bool {
	for _, c := range rec.Result().Cookies() {
		if c.Name == "_extauth" && (c.MaxAge < 0 || c.Value == "") {
			return true
		}
	}
	return false
}

// TestBackchannelLogoutEndsSessions: an accepted logout token ends the
// sessions it names and no others; the same user signing in afterwards passes.
func TestBackchannelLogoutEndsSessions(t *testing.T) {
	other := providertest.DefaultUser()
	other.Subject, other.Email, other.PreferredUsername = "other-subject", "other@example.com", "other"

	cases := []struct {
		name string
		// token is built from the user's two sessions.
		token func(e *testEnv, s1, s2 *session.State) string
		// want1, want2: the check of the user's first and second session.
		want1, want2 int
	}{
		{"sid only", func(e *testEnv, s1, _ *session.State) string { return e.idp.LogoutToken("", s1.SID) },
			http.StatusUnauthorized, http.StatusOK},
		{"sid and sub: the sid decides", func(e *testEnv, s1, _ *session.State) string { return e.idp.LogoutToken(s1.Subject, s1.SID) },
			http.StatusUnauthorized, http.StatusOK},
		{"sub only: all of the user's sessions", func(e *testEnv, s1, _ *session.State) string { return e.idp.LogoutToken(s1.Subject, "") },
			http.StatusUnauthorized, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			j1, j2 := e.signIn("/"), e.signIn("/")
			user := e.idp.User()
			e.idp.SetUser(other)
			jOther := e.signIn("/")
			e.idp.SetUser(user)
			s1, s2, sOther := e.backchannelSession(j1), e.backchannelSession(j2), e.backchannelSession(jOther)
			if s1.SID == "" || s1.SID == s2.SID || s1.Subject != s2.Subject || sOther.Subject == s1.Subject {
				t.Fatalf("sessions not set up as the test needs: sids %q %q, subjects %q %q %q",
					s1.SID, s2.SID, s1.Subject, s2.Subject, sOther.Subject)
			}
			e.clock.Advance(time.Second) // the provider learns of the logout after the sign-ins

			token := tc.token(e, s1, s2)
			rec := e.backchannelPost(token)
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("logout: status %d, body %q, headers %v", rec.Code, rec.Body.String(), rec.Header())
			}

			for _, s := range []struct {
				name string
				j    jar
				want int
			}{{"first session", j1, tc.want1}, {"second session", j2, tc.want2}, {"other user", jOther, http.StatusOK}} {
				rec := e.check(s.j.list(), "", nil)
				if rec.Code != s.want {
					t.Errorf("%s: check %d, want %d", s.name, rec.Code, s.want)
				}
				if rec.Code == http.StatusUnauthorized && !sessionCleared(rec) {
					t.Errorf("%s: ended session's cookie not cleared: %v", s.name, rec.Header().Values("Set-Cookie"))
				}
			}

			// The record ends sessions created before it: signing in again passes.
			e.clock.Advance(time.Second)
			if rec := e.check(e.signIn("/").list(), "", nil); rec.Code != http.StatusOK {
				t.Errorf("new sign-in after the logout: check %d, want 200", rec.Code)
			}

			if a, r := backchannelCount(e, metrics.BackchannelAccepted), backchannelCount(e, metrics.BackchannelRejected); a != 1 || r != 0 {
				t.Errorf("metrics accepted=%v rejected=%v, want 1 and 0", a, r)
			}
			logs := e.logs.String()
			if strings.Contains(logs, token) || strings.Contains(logs, "eyJ") {
				t.Error("a token reached the logs")
			}
			if !strings.Contains(logs, `"route":"`+backchannelPath+`"`) || !strings.Contains(logs, `"result":"accepted"`) {
				t.Errorf("no accepted request line logged: %s", logs)
			}
		})
	}
}

// TestBackchannelLogoutRejected: every invalid request is a 400 that ends
// nothing, is counted as rejected, and never echoes the token.
func TestBackchannelLogoutRejected(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	st := e.backchannelSession(j)
	e.clock.Advance(time.Second)

	// valid are the claims of a token that would end the session: each
	// case breaks exactly one thing, so a missing check shows as a 401.
	valid := func() map[string]any { return e.idp.LogoutTokenClaims(st.Subject, st.SID) }
	signed := func(change func(map[string]any)) url.Values {
		c := valid()
		change(c)
		return url.Values{"logout_token": {e.idp.SignJWT(c)}}
	}
	now := e.clock.Now()
	replayed := e.idp.LogoutToken("", "sid-of-another-session")

	cases := []struct {
		name   string
		method string
		form   url.Values
		query  string
		before func(t *testing.T) // e.g. the first use of a replayed token
		status int                // 0: 400 (a GET: anything but 200)
		reason string
		// contentType is the body's (default application/x-www-form-urlencoded).
		contentType string
	}{
		{name: "unsigned (alg none)", form: url.Values{"logout_token": {unsignedJWT(t, valid())}}, reason: "logout token not valid"},
		{name: "bad signature", form: url.Values{"logout_token": {e.idp.SignJWTWithOtherKey(valid())}}, reason: "logout token not valid"},
		{name: "not a JWT", form: url.Values{"logout_token": {"eyJnot.a-jwt"}}, reason: "logout token not valid"},
		{name: "wrong issuer", form: signed(func(c map[string]any) { c["iss"] = "https://evil.example.com" }), reason: "logout token not valid"},
		{name: "wrong audience", form: signed(func(c map[string]any) { c["aud"] = "another-client" }), reason: "logout token not valid"},
		{name: "expired", form: signed(func(c map[string]any) { c["exp"] = now.Add(-time.Second).Unix() }), reason: "logout token expired"},
		{name: "exp not a number", form: signed(func(c map[string]any) { c["exp"] = "tomorrow" }), reason: "logout token not valid"},
		{name: "iat too old", form: signed(func(c map[string]any) { c["iat"] = now.Add(-11 * time.Minute).Unix() }), reason: "iat too old"},
		{name: "iat in the future", form: signed(func(c map[string]any) { c["iat"] = now.Add(6 * time.Minute).Unix() }), reason: "iat in the future"},
		{name: "iat missing", form: signed(func(c map[string]any) { delete(c, "iat") }), reason: "iat missing or not a number"},
		{name: "nonce present", form: signed(func(c map[string]any) { c["nonce"] = "n-0S6_WzA2Mj" }), reason: "nonce present"},
		{name: "events missing", form: signed(func(c map[string]any) { delete(c, "events") }), reason: "events claim lacks the back-channel logout event"},
		{name: "events without the back-channel member", form: signed(func(c map[string]any) {
			c["events"] = map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}
		}), reason: "events claim lacks the back-channel logout event"},
		{name: "back-channel event not an object", form: signed(func(c map[string]any) {
			c["events"] = map[string]any{backchannelEvent: "yes"}
		}), reason: "events claim lacks the back-channel logout event"},
		{name: "events not an object", form: signed(func(c map[string]any) { c["events"] = []string{backchannelEvent} }),
			reason: "events claim lacks the back-channel logout event"},
		{name: "neither sid nor sub", form: url.Values{"logout_token": {e.idp.SignJWT(e.idp.LogoutTokenClaims("", ""))}}, reason: "neither sid nor sub"},
		{name: "sid not a string", form: signed(func(c map[string]any) { c["sid"] = 42 }), reason: "sid or sub is not a non-empty string"},
		{name: "jti missing", form: signed(func(c map[string]any) { delete(c, "jti") }), reason: "jti missing"},
		{name: "logout_token missing", form: url.Values{"token": {e.idp.LogoutToken(st.Subject, st.SID)}}, reason: "missing logout_token"},
		{name: "logout_token in the query only", query: "?logout_token=" + url.QueryEscape(e.idp.LogoutToken(st.Subject, st.SID)), form: url.Values{}, reason: "missing logout_token"},
		{name: "two logout_tokens", form: url.Values{"logout_token": {e.idp.LogoutToken(st.Subject, st.SID), e.idp.LogoutToken(st.Subject, st.SID)}},
			reason: "more than one logout_token"},
		{name: "body over 32 KiB", form: url.Values{"logout_token": {e.idp.LogoutToken(st.Subject, st.SID)}, "pad": {strings.Repeat("a", 32<<10)}},
			status: http.StatusRequestEntityTooLarge, reason: "The request body is larger than 32768 bytes."},
		{name: "multipart body", contentType: "multipart/form-data; boundary=x", form: url.Values{"logout_token": {e.idp.LogoutToken(st.Subject, st.SID)}},
			status: http.StatusUnsupportedMediaType, reason: "The request body must be application/x-www-form-urlencoded."},
		{name: "GET", method: http.MethodGet, form: url.Values{"logout_token": {e.idp.LogoutToken(st.Subject, st.SID)}}},
		{name: "replayed jti", form: url.Values{"logout_token": {replayed}}, reason: "jti already used", before: func(t *testing.T) {
			if rec := e.backchannelPost(replayed); rec.Code != http.StatusOK {
				t.Fatalf("first use: %d %s", rec.Code, rec.Body.String())
			}
		}},
	}
	var posted []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before(t)
			}
			posted = append(posted, tc.form["logout_token"]...)
			acceptedBefore, rejectedBefore := backchannelCount(e, metrics.BackchannelAccepted), backchannelCount(e, metrics.BackchannelRejected)

			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, backchannelPath+tc.query, strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec := httptest.NewRecorder()
			e.router.ServeHTTP(rec, req)
			want := tc.status
			if want == 0 {
				want = http.StatusBadRequest
			}

			if tc.method != "" {
				if rec.Code == http.StatusOK {
					t.Errorf("%s answered 200", tc.method)
				}
			} else {
				if rec.Code != want || rec.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("status %d, headers %v; want %d, no-store", rec.Code, rec.Header(), want)
				}
				var body map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil ||
					body["error"] != "invalid_request" || body["error_description"] != tc.reason {
					t.Errorf("body %s; want invalid_request, %q", rec.Body.String(), tc.reason)
				}
				for _, tok := range tc.form["logout_token"] {
					if strings.Contains(rec.Body.String(), tok) {
						t.Error("the answer echoes the token")
					}
				}
				if r := backchannelCount(e, metrics.BackchannelRejected); r != rejectedBefore+1 {
					t.Errorf("rejected = %v, want %v", r, rejectedBefore+1)
				}
			}
			if a := backchannelCount(e, metrics.BackchannelAccepted); a != acceptedBefore {
				t.Errorf("accepted = %v, want %v", a, acceptedBefore)
			}
			if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
				t.Errorf("the session no longer passes: check %d", rec.Code)
			}
		})
	}

	logs := e.logs.String()
	for _, tok := range posted {
		if len(tok) > 20 && strings.Contains(logs, tok) {
			t.Errorf("a logout token (%.12s…) reached the logs", tok)
		}
	}
	if strings.Contains(logs, "eyJ") {
		t.Error("something token-like reached the logs")
	}
	if !strings.Contains(logs, `"reason":"nonce present"`) || !strings.Contains(logs, `"result":"rejected"`) {
		t.Errorf("rejections not logged with a reason: %s", logs)
	}
}

// TestBackchannelLogoutInvalidTokenKeepsJTI: the jti is checked last, so a
// token refused for another reason does not use up its jti.
func TestBackchannelLogoutInvalidTokenKeepsJTI(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	st := e.backchannelSession(j)
	e.clock.Advance(time.Second)

	claims := e.idp.LogoutTokenClaims(st.Subject, st.SID)
	claims["nonce"] = "abc"
	if rec := e.backchannelPost(e.idp.SignJWT(claims)); rec.Code != http.StatusBadRequest {
		t.Fatalf("token with a nonce: %d, want 400", rec.Code)
	}
	delete(claims, "nonce") // same jti
	if rec := e.backchannelPost(e.idp.SignJWT(claims)); rec.Code != http.StatusOK {
		t.Fatalf("valid token with the jti of a refused one: %d %s, want 200", rec.Code, rec.Body.String())
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("session after logout: check %d, want 401", rec.Code)
	}
}

// TestBackchannelLogoutUnavailable: when extauth cannot decide now (provider
// not discovered, logout store failing) the provider is told to retry (503)
// and nothing is ended.
func TestBackchannelLogoutUnavailable(t *testing.T) {
	t.Run("provider not discovered", func(t *testing.T) {
		e := newTestEnv(t, nil)
		rec := e.backchannelPost(e.idp.LogoutToken("someone", "some-sid"))
		if rec.Code != http.StatusServiceUnavailable || readAll(rec.Body) != `{"error":"temporarily_unavailable"}` ||
			rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("status %d, body %s, headers %v", rec.Code, rec.Body.String(), rec.Header())
		}
		if r := backchannelCount(e, metrics.BackchannelRejected); r != 1 {
			t.Errorf("rejected = %v, want 1", r)
		}
	})

	cases := []struct {
		name  string
		store *failingLogouts
	}{
		{"logout store fails", &failingLogouts{err: errors.New("redis down")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			router, err := NewRouter(Deps{Config: e.cfg, Provider: e.provider, Sessions: e.sessions, Logouts: tc.store,
				Metrics: e.metrics, Log: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: e.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			rec := backchannelPostTo(t, router, url.Values{"logout_token": {e.idp.LogoutToken("someone", "some-sid")}})
			if rec.Code != http.StatusServiceUnavailable || readAll(rec.Body) != `{"error":"temporarily_unavailable"}` {
				t.Errorf("status %d, body %s; want 503 temporarily_unavailable", rec.Code, rec.Body.String())
			}
			if a, r := backchannelCount(e, metrics.BackchannelAccepted), backchannelCount(e, metrics.BackchannelRejected); a != 0 || r != 1 {
				t.Errorf("metrics accepted=%v rejected=%v, want 0 and 1", a, r)
			}
			if !strings.Contains(e.logs.String(), "redis down") {
				t.Error("the store error is not logged")
			}
		})
	}
}

// failingLogouts is a logout.Store whose writes fail with err.
type failingLogouts struct{ err error }

func (f *failingLogouts) End(context.Context, logout.Kind, string, time.Time, time.Time) error {
	return f.err
}

func (f *failingLogouts) Ended(context.Context, logout.Kind, string, time.Time) (bool, error) {
	return false, nil
}

func (f *failingLogouts) EndOnce(context.Context, string, time.Time, logout.Kind, string, time.Time, time.Time) (bool, error) {
	return f.err == nil, f.err
}
