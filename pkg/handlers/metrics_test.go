package handlers

import (
	"flag"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// countersOfTheContract are the metrics whose values a golden file can pin:
// the durations and sizes vary from run to run.
var countersOfTheContract = []string{
	"extauth_auth_requests_total",
	"extauth_signins_total",
	"extauth_callbacks_total",
	"extauth_token_refreshes_total",
	"extauth_token_revocations_total",
	"extauth_sign_outs_total",
	"extauth_backchannel_logouts_total",
	"extauth_http_requests_total",
}

// driveEveryStep takes one of each step through the router.
func driveEveryStep(t *testing.T, e *testEnv) {
	t.Helper()
	e.check(nil, "", nil)                                                      // unauthenticated
	e.do(http.MethodGet, "/oauth2/start?rd=%2F%2Fevil.com", nil, nil)          // invalid_redirect
	e.callback(jar{}, &url.URL{Path: "/oauth2/callback", RawQuery: "state=x"}) // invalid_state
	j := e.signIn("/")                                                         // redirected, success
	e.check(j.list(), "", nil)                                                 // authenticated
	e.check(j.list(), "allowed_groups=payroll", nil)                           // forbidden
	e.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil)

	e.clock.Advance(time.Hour)
	old := j.list()
	j.update(e.check(old, "", nil)) // refresh success
	e.check(old, "", nil)           // refresh shared

	e.idp.SetFault(providertest.EndpointToken, providertest.Fault503)
	e.clock.Advance(time.Hour)
	e.check(j.list(), "", nil) // idp_unavailable, within grace
	e.idp.SetFault(providertest.EndpointToken, providertest.FaultInvalidGrant)
	e.clock.Advance(time.Minute)
	e.check(j.list(), "", nil) // invalid_grant
	e.idp.SetFault(providertest.EndpointToken, providertest.FaultNone)

	j2 := e.signIn("/")
	e.do(http.MethodGet, "/oauth2/sign_out", j2.list(), nil) // revocations, sign-out

	e.backchannel(e.idp.LogoutToken("", "some-sid")) // accepted
	e.backchannel(e.idp.SignJWTWithOtherKey(nil))    // rejected
}

// backchannel posts a logout token.
func (e *testEnv) backchannel(token string) {
	e.t.Helper()
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	req := url.Values{"logout_token": {token}}.Encode()
	e.doBody(http.MethodPost, "/oauth2/backchannel_logout", req, h)
}

func TestMetricsGolden(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	driveEveryStep(t, e)

	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, name := range countersOfTheContract {
				if mf.GetName() == name {
					if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(golden)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(e.reg, f, countersOfTheContract...); err != nil {
		t.Error(err)
	}

	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestCountersMoveByWhatWasDone: N checks add exactly N.
func TestCountersMoveByWhatWasDone(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	const n = 37
	before := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthAuthenticated))
	beforeHTTP := testutil.ToFloat64(e.metrics.HTTPRequests.WithLabelValues("/oauth2/auth", "GET", "200"))
	for range n {
		if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
			t.Fatal(rec.Code)
		}
	}
	if got := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthAuthenticated)) - before; got != n {
		t.Errorf("authenticated moved by %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(e.metrics.HTTPRequests.WithLabelValues("/oauth2/auth", "GET", "200")) - beforeHTTP; got != n {
		t.Errorf("http requests moved by %v, want %d", got, n)
	}
	for range 5 {
		e.check(nil, "", nil)
	}
	if got := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthUnauthenticated)); got != 5 {
		t.Errorf("unauthenticated = %v, want 5", got)
	}
	if got := testutil.CollectAndCount(e.metrics.AuthRequestDuration); got != 15 {
		t.Errorf("check duration series = %d, want one per endpoint and result (3×5)", got)
	}
	// The raw path never becomes a label: an unknown path is "unmatched".
	e.do(http.MethodGet, "/secret/users/alice", nil, nil)
	if got := testutil.ToFloat64(e.metrics.HTTPRequests.WithLabelValues("unmatched", "GET", "404")); got != 1 {
		t.Errorf("unmatched = %v", got)
	}
}

// TestLogsCarryNoSecretsAtDebug runs sign-in, refresh, sign-out and
// back-channel logout with debug logging and searches the logs for every
// token, the authorization code and the cookie values.
func TestLogsCarryNoSecretsAtDebug(t *testing.T) {
	e := newTestEnv(t, nil).discover() // logs at debug level
	var secrets []string
	j := jar{}
	auth := e.startSignIn(j, "/")
	cb := e.idp.Login(t, t.Context(), auth.String())
	secrets = append(secrets, cb.Query().Get("code"), auth.Query().Get("state"), auth.Query().Get("nonce"), j["_extauth_csrf"].Value)
	if rec := e.callback(j, cb); rec.Code != http.StatusFound {
		t.Fatal(rec.Code)
	}
	tokens := mustLoad(t, e, j.list()).Tokens()
	secrets = append(secrets, tokens.AccessToken, tokens.IDToken, tokens.RefreshToken, j["_extauth"].Value)

	e.clock.Advance(time.Hour)
	rec := e.check(j.list(), "", nil)
	j.update(rec)
	refreshed := mustLoad(t, e, j.list()).Tokens()
	secrets = append(secrets, refreshed.AccessToken, refreshed.RefreshToken, j["_extauth"].Value)
	e.check(nil, "", http.Header{"Cookie": {"_extauth=" + j["_extauth"].Value + "tampered"}})
	e.check(nil, "", http.Header{"Authorization": {"Bearer " + refreshed.AccessToken}})

	e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
	logoutToken := e.idp.LogoutToken("", "sid-1")
	e.backchannel(logoutToken)
	e.backchannel(logoutToken) // replayed: rejected, logged
	secrets = append(secrets, logoutToken, e.cfg.OIDC.ClientSecret, e.cfg.Session.Secrets[0])

	logs := e.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) && !strings.Contains(logs, `"level":"INFO"`) {
		t.Fatal("no logs captured")
	}
	for i, s := range secrets {
		if s == "" {
			t.Fatalf("secret %d is empty: the test would prove nothing", i)
		}
		if strings.Contains(logs, s) {
			t.Errorf("secret %d (%.10s…) appears in the logs", i, s)
		}
		// A token's signature alone is as good as a leak.
		if parts := strings.Split(s, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
			t.Errorf("secret %d's signature appears in the logs", i)
		}
	}
}
