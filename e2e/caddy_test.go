package e2e

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/op"
	"github.com/extauth/extauth/e2e/stack"
)

// TestBrowserThroughCaddy signs in through Debian's caddy with forward_auth
// to /oauth2/forward-auth (examples/caddy/Caddyfile as it is), against the
// same real provider, and sees a refresh reach the browser: Caddy drops the
// headers of a 2xx auth answer, so the refreshed cookie comes in a 307.
func TestBrowserThroughCaddy(t *testing.T) {
	s := startStack(t, stack.Options{Gateway: "caddy"})
	ctx := browser(t)

	target := s.URL + "/through/caddy?x=1"
	run(t, ctx, "open the protected page", chromedp.Navigate(target))
	if !onProvider(t, ctx, s) {
		t.Fatal("not sent to the provider's login page")
	}
	login(t, ctx, s)
	run(t, ctx, "signed-in page", chromedp.WaitVisible(chromedp.CSS("#greeting")))
	if loc := get(t, ctx, "location", chromedp.Location()); loc != target {
		t.Errorf("landed on %s, want %s", loc, target)
	}
	if email := text(t, ctx, `td[data-header="X-Auth-Request-Email"]`); email != op.Email {
		t.Errorf("upstream saw email %q", email)
	}
	noForgedHeadersReachTheApp(t, ctx)

	before := sessionCookie(t, ctx)
	refreshes := s.OP.TokenRequests("refresh_token")
	time.Sleep(accessTTL)
	run(t, ctx, "reload after expiry", chromedp.Navigate(s.URL+"/through/caddy/again"), chromedp.WaitVisible(chromedp.CSS("#greeting")))
	if onProvider(t, ctx, s) {
		t.Fatal("sent to log in again after the access token expired")
	}
	if got := s.OP.TokenRequests("refresh_token"); got != refreshes+1 {
		t.Errorf("refresh-token grants = %d, want %d", got, refreshes+1)
	}
	if after := sessionCookie(t, ctx); after == before || after == "" {
		t.Error("the refreshed session cookie did not reach the browser through caddy")
	}
	if loc := get(t, ctx, "location", chromedp.Location()); loc != s.URL+"/through/caddy/again" {
		t.Errorf("after the refresh the browser is at %s", loc)
	}
}
