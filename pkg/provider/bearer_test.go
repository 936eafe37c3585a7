package provider_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// bearerEnv is two issuers an app accepts bearer tokens from, each with
// its own audiences: ci (found by discovery) and cluster (its JWKS URL
// given, no discovery), on one clock.
type bearerEnv struct {
	clk         *clock
	ci, cluster *providertest.Provider
	b           *provider.Bearers
}

func newBearerEnv(t *testing.T) *bearerEnv {
	t.Helper()
	clk := newClock()
	e := &bearerEnv{
		clk:     clk,
		ci:      providertest.New(t, providertest.WithClock(clk.Now)),
		cluster: providertest.New(t, providertest.WithClock(clk.Now)),
	}
	var err error
	e.b, err = provider.NewBearers([]provider.BearerIssuer{
		{IssuerURL: e.ci.Issuer, Audiences: []string{"grafana-ci"}},
		{IssuerURL: e.cluster.Issuer, Audiences: []string{"grafana", "wiki"}, JWKSURL: e.cluster.URL(providertest.EndpointKeys)},
	}, provider.BearerOptions{Now: clk.Now, Log: slog.New(slog.DiscardHandler), Metrics: metrics.New(prometheus.NewRegistry(), "test")})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// token is a JWT of idp (its signing key) for aud, valid for an hour.
func (e *bearerEnv) token(idp *providertest.Provider, aud any, edit func(map[string]any)) string {
	now := e.clk.Now()
	claims := map[string]any{"iss": idp.Issuer, "sub": "ci-job", "aud": aud,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if edit != nil {
		edit(claims)
	}
	return idp.SignJWT(claims)
}

func TestBearersTwoIssuers(t *testing.T) {
	e := newBearerEnv(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		token string
		want  error // nil: accepted
		from  *providertest.Provider
	}{
		{name: "ci token for its audience", token: e.token(e.ci, "grafana-ci", nil), from: e.ci},
		{name: "cluster token, one of its audiences in a list", token: e.token(e.cluster, []string{"other", "wiki"}, nil), from: e.cluster},
		// The cluster issuer accepts aud grafana; the ci issuer does not:
		// audiences belong to their issuer.
		{name: "ci token for the cluster issuer's audience", token: e.token(e.ci, "grafana", nil), want: provider.ErrBearerAudience},
		{name: "cluster token for the ci audience", token: e.token(e.cluster, "grafana-ci", nil), want: provider.ErrBearerAudience},
		{name: "unknown issuer", token: e.token(e.ci, "grafana-ci", func(c map[string]any) { c["iss"] = "https://evil.example.com" }), want: provider.ErrBearerIssuerUnknown},
		{name: "ci's iss on the cluster's token", token: e.token(e.cluster, "grafana-ci", func(c map[string]any) { c["iss"] = e.ci.Issuer + "/" }), want: provider.ErrBearerIssuerUnknown},
		{name: "no iss", token: e.token(e.ci, "grafana-ci", func(c map[string]any) { delete(c, "iss") }), want: provider.ErrBearerMalformed},
		{name: "expired", token: e.token(e.ci, "grafana-ci", func(c map[string]any) { c["exp"] = e.clk.Now().Add(-time.Minute).Unix() }), want: provider.ErrBearerExpired},
		{name: "signed with another key", token: e.ci.SignJWTWithOtherKey(map[string]any{"iss": e.ci.Issuer, "sub": "x", "aud": "grafana-ci", "exp": e.clk.Now().Add(time.Hour).Unix()}), want: provider.ErrBearerInvalid},
		{name: "not a JWT", token: "abc.def", want: provider.ErrBearerMalformed},
		{name: "payload not base64", token: "a.!!!.c", want: provider.ErrBearerMalformed},
		{name: "too long", token: "a." + strings.Repeat("b", 20<<10) + ".c", want: provider.ErrBearerMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, is, err := e.b.Verify(ctx, tc.token)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || tok != nil {
					t.Fatalf("Verify = %v, %v; want %v", tok, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tok.Subject != "ci-job" || is.IssuerURL != tc.from.Issuer {
				t.Errorf("token of %q via issuer %q, want ci-job via %q", tok.Subject, is.IssuerURL, tc.from.Issuer)
			}
		})
	}
	// Discovery for the one that needs it, once; none for the JWKS URL.
	if n := e.ci.Calls(providertest.EndpointDiscovery); n != 1 {
		t.Errorf("ci discovery calls = %d, want 1", n)
	}
	if n := e.cluster.Calls(providertest.EndpointDiscovery); n != 0 {
		t.Errorf("cluster discovery calls = %d, want 0 (jwksURL given)", n)
	}
}

// An issuer that is down refuses its tokens (never a panic or a wait per
// token) and is asked again only after BearerRetry; the other issuer's
// tokens pass meanwhile.
func TestBearersIssuerDown(t *testing.T) {
	e := newBearerEnv(t)
	ctx := t.Context()
	e.ci.SetFault(providertest.EndpointDiscovery, providertest.Fault503)
	tok := e.token(e.ci, "grafana-ci", nil)
	for range 5 {
		if _, _, err := e.b.Verify(ctx, tok); !errors.Is(err, provider.ErrBearerIssuerUnavailable) {
			t.Fatalf("Verify while down = %v, want ErrBearerIssuerUnavailable", err)
		}
	}
	if n := e.ci.Calls(providertest.EndpointDiscovery); n != 1 {
		t.Errorf("discovery calls while down = %d, want 1 (then throttled)", n)
	}
	if _, _, err := e.b.Verify(ctx, e.token(e.cluster, "wiki", nil)); err != nil {
		t.Errorf("cluster token while ci is down: %v", err)
	}
	e.ci.SetFault(providertest.EndpointDiscovery, providertest.FaultNone)
	e.clk.Advance(provider.BearerRetry)
	tok = e.token(e.ci, "grafana-ci", nil)
	if _, _, err := e.b.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify after the issuer is back: %v", err)
	}
	if n := e.ci.Calls(providertest.EndpointDiscovery); n != 2 {
		t.Errorf("discovery calls = %d, want 2", n)
	}
}

func TestNewBearersRefuses(t *testing.T) {
	opts := provider.BearerOptions{Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	if _, err := provider.NewBearers(nil, opts); err == nil {
		t.Error("no issuers: no error")
	}
	twice := []provider.BearerIssuer{{IssuerURL: "https://a.example.com", Audiences: []string{"x"}}, {IssuerURL: "https://a.example.com", Audiences: []string{"y"}}}
	if _, err := provider.NewBearers(twice, opts); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("an issuer twice: %v", err)
	}
}
