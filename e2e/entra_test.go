package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// TestBrowserEntraSizedSession: Entra ID's token set (8.5 KB of tokens, 40
// groups), served by the in-process fake provider, survives sign-in and a
// refresh through nginx's auth_request. The session keeps its ID token in a
// cookie of its own, written once, and leaves out the access token (no
// header needs it), so the refresh travels in the check's one Set-Cookie.
func TestBrowserEntraSizedSession(t *testing.T) {
	entra := testenv.LoadTokenSet(t, "entra")
	user := providertest.DefaultUser()
	user.Groups = testenv.EntraGroups()
	idp := providertest.New(t, providertest.WithClock(time.Now), providertest.WithUser(user),
		providertest.WithAccessTokenTTL(accessTTL))
	idp.ServeTokens(entra.AccessToken, entra.RefreshToken)
	s := startStack(t, stack.Options{
		Provider: &stack.ExternalProvider{Issuer: idp.Issuer, ClientID: idp.ClientID, ClientSecret: idp.ClientSecret},
	})
	ctx := browser(t)

	// The fake provider approves at once: no login page.
	run(t, ctx, "sign in", chromedp.Navigate(s.URL+"/entra"))
	groups := text(t, ctx, `td[data-header="X-Auth-Request-Groups"]`)
	if n := len(splitComma(groups)); n != 40 {
		t.Fatalf("upstream saw %d groups", n)
	}
	first := cookies(t, ctx)
	if first["_extauth"] == "" || first["_extauth_id"] == "" {
		t.Fatalf("cookies after sign-in: %v", keys(first))
	}
	total := 0
	for name, v := range first {
		total += len(name) + 1 + len(v)
	}
	t.Logf("Entra-sized session: cookies %v, %d bytes in the Cookie header", keys(first), total)

	time.Sleep(accessTTL)
	run(t, ctx, "reload after expiry", chromedp.Navigate(s.URL+"/entra/again"))
	if groups = text(t, ctx, `td[data-header="X-Auth-Request-Groups"]`); len(splitComma(groups)) != 40 {
		t.Errorf("after the refresh the upstream saw %d groups", len(splitComma(groups)))
	}
	if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("refresh-token grants = %d, want 1", got)
	}
	second := cookies(t, ctx)
	if second["_extauth"] == first["_extauth"] {
		t.Error("the refreshed session did not reach the browser through nginx")
	}
	if second["_extauth_id"] != first["_extauth_id"] {
		t.Error("the ID token's cookie changed on refresh")
	}
	// And the refreshed session passes on its own, with no further refresh.
	resp := fetchWithCookies(t, s.URL+"/api/x", second)
	if resp != http.StatusOK {
		t.Errorf("refreshed session: status %d", resp)
	}
	if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("refresh-token grants = %d after the refreshed session's check, want 1", got)
	}
}

func cookies(t *testing.T, ctx context.Context) map[string]string {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	out := map[string]string{}
	for _, c := range res.Cookies {
		out[c.Name] = c.Value
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// fetchWithCookies GETs url through nginx with the given cookies, without a browser.
func fetchWithCookies(t *testing.T, url string, cookies map[string]string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	for name, v := range cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
