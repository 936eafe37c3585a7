package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// TestCallbackFailures: every way a callback can go wrong gives a 4xx page,
// its labelled metric, and no session.
func TestCallbackFailures(t *testing.T) {
	tests := []struct {
		name   string
		result string
		status int
		// run walks the flow up to the callback and returns the request to send.
		run func(e *testEnv, j jar) *url.URL
	}{
		{"state mismatch", metrics.CallbackInvalidState, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			q := cb.Query()
			q.Set("state", strings.Repeat("A", 43))
			cb.RawQuery = q.Encode()
			return cb
		}},
		{"missing state", metrics.CallbackInvalidState, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			q := cb.Query()
			q.Del("state")
			cb.RawQuery = q.Encode()
			return cb
		}},
		{"missing flow cookie", metrics.CallbackInvalidState, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			delete(j, "_extauth_csrf")
			return cb
		}},
		{"flow expired", metrics.CallbackInvalidState, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			e.clock.Advance(16 * time.Minute)
			return cb
		}},
		{"provider error", metrics.CallbackIdPError, http.StatusForbidden, func(e *testEnv, j jar) *url.URL {
			e.idp.AuthorizeError("access_denied")
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"provider error, hostile code", metrics.CallbackIdPError, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			auth := e.startSignIn(j, "/")
			return &url.URL{Path: "/oauth2/callback", RawQuery: url.Values{
				"error": {"<script>alert(1)</script>"}, "state": {auth.Query().Get("state")},
			}.Encode()}
		}},
		{"replayed code", metrics.CallbackExchangeFailed, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			flow := j["_extauth_csrf"]
			if rec := e.callback(j, cb); rec.Code != http.StatusFound {
				e.t.Fatalf("first redemption failed: %d", rec.Code)
			}
			// The attacker replays the code with the flow cookie as it was.
			for k := range j {
				delete(j, k)
			}
			j["_extauth_csrf"] = flow
			return cb
		}},
		{"missing code", metrics.CallbackExchangeFailed, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			cb := e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
			q := cb.Query()
			q.Del("code")
			cb.RawQuery = q.Encode()
			return cb
		}},
		{"wrong nonce", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SetIDTokenMutator(func(c map[string]any) { c["nonce"] = "not-the-nonce" })
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"wrong audience", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SetIDTokenMutator(func(c map[string]any) { c["aud"] = "another-client" })
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"wrong issuer", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SetIDTokenMutator(func(c map[string]any) { c["iss"] = "https://evil.example" })
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"expired id token", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SetIDTokenMutator(func(c map[string]any) {
				c["exp"] = e.clock.Now().Add(-time.Minute).Unix()
			})
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"bad signature", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SignNextIDTokenWithOtherKey()
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
		{"unsigned id token", metrics.CallbackInvalidIDToken, http.StatusBadRequest, func(e *testEnv, j jar) *url.URL {
			e.idp.SetIDTokenAlgNone()
			return e.idp.Login(e.t, e.t.Context(), e.startSignIn(j, "/").String())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			j := jar{}
			cb := tc.run(e, j)
			delete(j, "_extauth") // a session from an earlier step of the case does not count
			rec := e.callback(j, cb)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			if _, ok := j["_extauth"]; ok {
				t.Error("a failed callback set a session")
			}
			for _, c := range rec.Result().Cookies() {
				if c.Name == "_extauth" && c.MaxAge >= 0 {
					t.Error("a failed callback set a session cookie")
				}
			}
			if got := testutil.ToFloat64(e.metrics.Callbacks.WithLabelValues("", tc.result)); got != 1 {
				t.Errorf("callbacks{result=%q} = %v, want 1", tc.result, got)
			}
			if strings.Contains(rec.Body.String(), "<script>") {
				t.Error("the error page echoes hostile input")
			}
			if !strings.Contains(rec.Header().Get("Content-Type"), "text/html") {
				t.Errorf("not an error page: %q", rec.Header().Get("Content-Type"))
			}
			if strings.Contains(e.logs.String(), cb.Query().Get("code")) && cb.Query().Get("code") != "" {
				t.Error("the authorization code reached the log")
			}
		})
	}
}

func TestCallbackProviderDownIs502(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := jar{}
	cb := e.idp.Login(t, t.Context(), e.startSignIn(j, "/").String())
	e.idp.SetFault(providertest.EndpointToken, providertest.Fault503)
	rec := e.callback(j, cb)
	if rec.Code != http.StatusBadGateway || j["_extauth"] != nil {
		t.Errorf("status %d, session %v", rec.Code, j["_extauth"])
	}
	if got := testutil.ToFloat64(e.metrics.Callbacks.WithLabelValues("", metrics.CallbackExchangeFailed)); got != 1 {
		t.Errorf("exchange_failed = %v", got)
	}
	if got := testutil.CollectAndCount(e.metrics.IdPRequestDuration); got == 0 {
		t.Error("provider calls not measured")
	}
}
