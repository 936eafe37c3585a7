package refresh

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/pkg/identity"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

const (
	before = time.Minute
	grace  = 5 * time.Minute
	window = 30 * time.Second
)

var t0 = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// fakeProvider redeems refresh tokens as answer says; VerifyIDToken checks
// providertest's signature unless verify says otherwise.
type fakeProvider struct {
	answer func(rt string) (*provider.Tokens, error)
	verify func(ctx context.Context, raw string) (*oidc.IDToken, error)
	// entered, when set, is signalled (without blocking) by every Refresh;
	// release, when set, holds every Refresh until it is closed.
	entered chan struct{}
	release chan struct{}

	mu       sync.Mutex
	redeemed []string
}

func (p *fakeProvider) Refresh(_ context.Context, rt string) (*provider.Tokens, error) {
	p.mu.Lock()
	p.redeemed = append(p.redeemed, rt)
	p.mu.Unlock()
	if p.entered != nil {
		select {
		case p.entered <- struct{}{}:
		default:
		}
	}
	if p.release != nil {
		<-p.release
	}
	return p.answer(rt)
}

func (p *fakeProvider) VerifyIDToken(ctx context.Context, raw string) (*oidc.IDToken, error) {
	return p.verify(ctx, raw)
}

func (p *fakeProvider) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.redeemed)
}

// fakeStore seals with a real cookie store, failing the first Seals with
// sealErrs.
type fakeStore struct {
	cookies *session.Store
	// noCookies: seal as a server-side store does, with nothing to write.
	noCookies bool

	mu       sync.Mutex
	sealErrs []error
	seals    []*session.State
	shared   []*session.State
	last     *session.Sealed
}

func (s *fakeStore) Seal(ctx context.Context, st *session.State) (*session.Sealed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seals = append(s.seals, st)
	if len(s.sealErrs) > 0 {
		err := s.sealErrs[0]
		s.sealErrs = s.sealErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	if s.noCookies {
		s.last = &session.Sealed{}
		return s.last, nil
	}
	sealed, err := s.cookies.Seal(ctx, st)
	s.last = sealed
	return sealed, err
}

func (s *fakeStore) Shared(st *session.State) (*session.Sealed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shared = append(s.shared, st)
	sealed, err := s.cookies.Shared(st)
	s.last = sealed
	return sealed, err
}

func (s *fakeStore) counts() (seals, shared int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seals), len(s.shared)
}

func (s *fakeStore) lastSealed() *session.Sealed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// fakeCoordinator is Do, scripted.
type fakeCoordinator func(ctx context.Context, rt string, redeem func(context.Context) ([]byte, error)) ([]byte, bool, error)

func (f fakeCoordinator) Do(ctx context.Context, rt string, redeem func(context.Context) ([]byte, error)) ([]byte, bool, error) {
	return f(ctx, rt, redeem)
}

type env struct {
	clk   *fakeClock
	idp   *providertest.Provider
	prov  *fakeProvider
	store *fakeStore
	r     *Refresher
}

// newEnv returns a Refresher over fakes at t0; coord may be nil.
func newEnv(t *testing.T, coord Coordinator) *env {
	t.Helper()
	clk := &fakeClock{now: t0}
	idp := providertest.New(t, providertest.WithClock(clk.Now))
	keys := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{idp.PublicKey()}}
	verifier := oidc.NewVerifier(idp.Issuer, keys, &oidc.Config{ClientID: idp.ClientID, Now: clk.Now})
	prov := &fakeProvider{
		answer: func(string) (*provider.Tokens, error) {
			return &provider.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", Expiry: clk.Now().Add(time.Hour), Lifetime: time.Hour}, nil
		},
		verify: verifier.Verify,
	}
	secret := bytes.Repeat([]byte{7}, 32)
	codec, err := session.NewCodec([][]byte{secret}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store := &fakeStore{cookies: session.NewStore(codec, session.Options{Name: "_extauth"}, clk.Now)}
	cfg := Config{
		Provider: prov,
		Identity: &identity.Builder{
			Names:  identity.Names{User: "sub", Email: "email", PreferredUsername: "preferred_username", Groups: "groups"},
			Keep:   identity.Keep{AccessToken: true, IDToken: true, RefreshToken: true},
			MaxAge: 24 * time.Hour,
			Log:    slog.New(slog.DiscardHandler),
		},
		Store:       store,
		Now:         clk.Now,
		Before:      before,
		Grace:       grace,
		ReuseWindow: window,
	}
	if coord != nil {
		cfg.Coordinator = coord
	}
	return &env{clk: clk, idp: idp, prov: prov, store: store, r: NewRefresher(cfg)}
}

// idToken signs an ID token for the refresh with claims.
func (e *env) idToken(claims map[string]any) string {
	all := map[string]any{"iss": e.idp.Issuer, "aud": e.idp.ClientID, "iat": e.clk.Now().Unix(), "exp": e.clk.Now().Add(time.Hour).Unix()}
	maps.Copy(all, claims)
	return e.idp.SignJWT(all)
}

// signedIn is a session whose access token expires 30 s after t0 (due at
// t0), as a cookie brings it.
func signedIn(t *testing.T, tokens session.Tokens) *session.State {
	t.Helper()
	st := &session.State{
		ID: "sess-1", Subject: "u1", User: "u1", Email: "jane@example.com", PreferredUsername: "jane",
		Groups: []string{"staff"}, SID: "sid-1",
		CreatedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(23 * time.Hour),
		AccessExpiry: t0.Add(30 * time.Second), AccessLifetime: time.Hour,
	}
	st.SetTokens(tokens)
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

var oldTokens = session.Tokens{AccessToken: "at-1", IDToken: "id-1", RefreshToken: "rt-1"}

func encoded(t *testing.T, st *session.State) []byte {
	t.Helper()
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- Due -----------------------------------------------------------------------

func TestDue(t *testing.T) {
	exp := t0.Add(time.Hour)
	tests := []struct {
		name     string
		before   time.Duration
		expiry   time.Time
		lifetime time.Duration
		now      time.Time
		want     bool
	}{
		{"no expiry is never due", before, time.Time{}, 0, t0.Add(1000 * time.Hour), false},
		{"no expiry, with a lifetime", before, time.Time{}, time.Hour, t0.Add(1000 * time.Hour), false},
		{"lifetime unknown: just before the margin", before, exp, 0, exp.Add(-before - time.Nanosecond), false},
		{"lifetime unknown: at the margin", before, exp, 0, exp.Add(-before), true},
		{"past the expiry", before, exp, 0, exp.Add(time.Hour), true},
		{"long token: margin is Before", before, exp, time.Hour, exp.Add(-before - time.Nanosecond), false},
		{"long token: at the margin", before, exp, time.Hour, exp.Add(-before), true},
		{"half the lifetime equals Before", before, exp, 2 * before, exp.Add(-before), true},
		{"60 s token: not due at Before", before, exp, time.Minute, exp.Add(-before), false},
		{"60 s token: just before half its lifetime", before, exp, time.Minute, exp.Add(-30*time.Second - time.Nanosecond), false},
		{"60 s token: at half its lifetime", before, exp, time.Minute, exp.Add(-30 * time.Second), true},
		{"no margin: just before the expiry", 0, exp, time.Hour, exp.Add(-time.Nanosecond), false},
		{"no margin: at the expiry", 0, exp, time.Hour, exp, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRefresher(Config{Now: time.Now, Before: tt.before})
			st := &session.State{AccessExpiry: tt.expiry, AccessLifetime: tt.lifetime}
			if got := r.Due(st, tt.now); got != tt.want {
				t.Errorf("Due at expiry%+v = %v, want %v", tt.now.Sub(tt.expiry), got, tt.want)
			}
		})
	}
}

// --- Refresh ---------------------------------------------------------------------

func TestRefreshNotDue(t *testing.T) {
	e := newEnv(t, nil)
	st := signedIn(t, oldTokens)
	st.AccessExpiry = t0.Add(time.Hour)
	res, err := e.r.Refresh(t.Context(), st)
	if err != nil || res.State != st || res.Status != NotDue || res.Sealed != nil || res.CookieBytes != 0 || res.NewCookie {
		t.Errorf("got %+v, %v; want st itself, NotDue", res, err)
	}
	if seals, shared := e.store.counts(); e.prov.calls() != 0 || seals+shared != 0 {
		t.Errorf("provider calls %d, seals %d, shared %d", e.prov.calls(), seals, shared)
	}
}

func TestRefreshWithoutRefreshToken(t *testing.T) {
	e := newEnv(t, nil)
	st := signedIn(t, session.Tokens{AccessToken: "at-1", IDToken: "id-1"})

	// Due, but the access token is still good: the session passes.
	res, err := e.r.Refresh(t.Context(), st)
	if err != nil || res.State != st || res.Status != NotDue || res.Sealed != nil {
		t.Errorf("before the expiry: %+v, %v", res, err)
	}

	// At the expiry the session is over.
	e.clk.Advance(30 * time.Second)
	res, err = e.r.Refresh(t.Context(), st)
	var over *SessionOver
	if !errors.As(err, &over) || over.Reason != "access token expired, no refresh token" || over.Rejected {
		t.Fatalf("after the expiry: %#v", err)
	}
	if res.State != nil {
		t.Errorf("a session that is over answered with %+v", res.State)
	}
	if e.prov.calls() != 0 {
		t.Errorf("provider asked without a refresh token: %d", e.prov.calls())
	}
}

func TestRefreshRedeems(t *testing.T) {
	e := newEnv(t, nil)
	st := signedIn(t, oldTokens)
	old := encoded(t, st)

	res, err := e.r.Refresh(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Redeemed || res.State == nil || res.State == st {
		t.Fatalf("got %+v", res)
	}
	if !slices.Equal(e.prov.redeemed, []string{"rt-1"}) {
		t.Errorf("redeemed %v", e.prov.redeemed)
	}
	// No new ID token: the old one stays.
	if got := res.State.Tokens(); got != (session.Tokens{AccessToken: "at-2", IDToken: "id-1", RefreshToken: "rt-2"}) {
		t.Errorf("tokens %+v", got)
	}
	if !res.State.AccessExpiry.Equal(t0.Add(time.Hour)) || res.State.AccessLifetime != time.Hour {
		t.Errorf("access expiry %v, lifetime %v", res.State.AccessExpiry, res.State.AccessLifetime)
	}
	if res.State.ID != "sess-1" || res.State.User != "u1" || res.State.Email != "jane@example.com" || !slices.Equal(res.State.Groups, []string{"staff"}) {
		t.Errorf("identity: %+v", res.State)
	}
	seals, shared := e.store.counts()
	if seals != 1 || shared != 0 || e.store.seals[0] != res.State {
		t.Errorf("seals %d, shared %d", seals, shared)
	}
	if res.Sealed == nil || res.Sealed != e.store.lastSealed() || !res.Sealed.HasCookies() {
		t.Errorf("Sealed %+v is not what the store sealed", res.Sealed)
	}
	if res.CookieBytes == 0 || res.CookieBytes != res.Sealed.Size {
		t.Errorf("CookieBytes %d, sealed size %d", res.CookieBytes, res.Sealed.Size)
	}
	if !res.NewCookie {
		t.Error("NewCookie false for a sealed cookie of a session that is not due")
	}
	if !bytes.Equal(encoded(t, st), old) {
		t.Error("the old state changed")
	}
}

func TestRefreshNewCookie(t *testing.T) {
	t.Run("nothing to write", func(t *testing.T) {
		e := newEnv(t, nil)
		e.store.noCookies = true
		res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
		if err != nil || res.Status != Redeemed || res.Sealed == nil {
			t.Fatalf("%+v, %v", res, err)
		}
		if res.NewCookie || res.CookieBytes != 0 {
			t.Errorf("NewCookie %v, CookieBytes %d for a store without cookies", res.NewCookie, res.CookieBytes)
		}
	})
	t.Run("new session due at once", func(t *testing.T) {
		e := newEnv(t, nil)
		e.prov.answer = func(string) (*provider.Tokens, error) {
			return &provider.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", Expiry: e.clk.Now().Add(10 * time.Second)}, nil
		}
		res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
		if err != nil || res.Status != Redeemed || !res.Sealed.HasCookies() {
			t.Fatalf("%+v, %v", res, err)
		}
		if res.NewCookie {
			t.Error("NewCookie for a session that needs another refresh at once")
		}
	})
}

func TestRefreshConcurrentChecksRedeemOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.prov.entered = make(chan struct{}, 1)
	e.prov.release = make(chan struct{})
	st := signedIn(t, oldTokens)

	const n = 16
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = e.r.Refresh(t.Context(), st) })
	}
	<-e.prov.entered // the first redemption runs; the others wait or come later
	close(e.prov.release)
	wg.Wait()

	if e.prov.calls() != 1 {
		t.Errorf("%d redemptions of one refresh token", e.prov.calls())
	}
	if seals, shared := e.store.counts(); seals != 1 || shared != 0 {
		t.Errorf("seals %d, shared %d; want one seal", seals, shared)
	}
	// One check redeemed; the others shared its result. One check (the
	// first to reach the store, which need not be the redeeming one)
	// sealed the cookie and reports its size; the others wrote none.
	redeemed, sealers := 0, 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("check %d: %v", i, errs[i])
		}
		if res.State != results[0].State || res.Sealed != results[0].Sealed || res.Sealed == nil {
			t.Errorf("check %d answered with another session or seal", i)
		}
		switch res.Status {
		case Redeemed:
			redeemed++
		case Shared:
		default:
			t.Errorf("check %d: status %v", i, res.Status)
		}
		switch res.CookieBytes {
		case 0:
		case res.Sealed.Size:
			sealers++
		default:
			t.Errorf("check %d: CookieBytes %d, sealed size %d", i, res.CookieBytes, res.Sealed.Size)
		}
	}
	if redeemed != 1 || sealers != 1 {
		t.Errorf("%d checks redeemed and %d report cookie bytes, want 1 and 1", redeemed, sealers)
	}
}

func TestRefreshReuseWindow(t *testing.T) {
	e := newEnv(t, nil)
	st := signedIn(t, oldTokens)
	first, err := e.r.Refresh(t.Context(), st)
	if err != nil || first.Status != Redeemed {
		t.Fatalf("%+v, %v", first, err)
	}

	// A check still carrying the old cookie, at the window's last instant.
	e.clk.Advance(window - time.Nanosecond)
	again, err := e.r.Refresh(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if again.Status != Shared || again.State != first.State || again.Sealed != first.Sealed || again.CookieBytes != 0 {
		t.Errorf("within the window: %+v", again)
	}
	if seals, _ := e.store.counts(); e.prov.calls() != 1 || seals != 1 {
		t.Errorf("within the window: provider calls %d, seals %d", e.prov.calls(), seals)
	}

	// After the window the old refresh token goes to the provider again.
	e.clk.Advance(time.Nanosecond)
	later, err := e.r.Refresh(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if e.prov.calls() != 2 || later.Status != Redeemed || later.State == first.State {
		t.Errorf("after the window: provider calls %d, %+v", e.prov.calls(), later)
	}
}

func TestRefreshRejected(t *testing.T) {
	e := newEnv(t, nil)
	e.prov.answer = func(string) (*provider.Tokens, error) {
		return nil, fmt.Errorf("%w: token reused", provider.ErrRefreshRejected)
	}
	st := signedIn(t, oldTokens)
	for i := range 2 {
		res, err := e.r.Refresh(t.Context(), st)
		var over *SessionOver
		if !errors.As(err, &over) || !over.Rejected || !errors.Is(err, provider.ErrRefreshRejected) {
			t.Fatalf("call %d: %#v", i, err)
		}
		if res.State != nil {
			t.Errorf("call %d: a rejected session answered with %+v", i, res.State)
		}
	}
	if e.prov.calls() != 1 {
		t.Errorf("the rejection was not kept for the window: %d provider calls", e.prov.calls())
	}
	if seals, shared := e.store.counts(); seals+shared != 0 {
		t.Errorf("a rejected refresh stored a session (%d, %d)", seals, shared)
	}
}

func TestRefreshProviderDown(t *testing.T) {
	e := newEnv(t, nil)
	down := errors.New("token endpoint: 503")
	e.prov.answer = func(string) (*provider.Tokens, error) { return nil, down }
	st := signedIn(t, oldTokens)

	check := func(wantGrace bool) {
		t.Helper()
		res, err := e.r.Refresh(t.Context(), st)
		var pd *ProviderDown
		if !errors.As(err, &pd) || !errors.Is(err, down) {
			t.Fatalf("at expiry%+v: %#v", e.clk.Now().Sub(st.AccessExpiry), err)
		}
		if pd.InGrace != wantGrace {
			t.Errorf("at expiry%+v: InGrace %v", e.clk.Now().Sub(st.AccessExpiry), pd.InGrace)
		}
		if wantGrace && res.State != st {
			t.Errorf("in the grace period the old state must pass, got %+v", res.State)
		}
		if !wantGrace && res.State != nil {
			t.Errorf("after the grace period: %+v", res.State)
		}
	}
	check(true) // at t0, before the expiry
	check(true) // again: a failure is not kept, the provider is asked again
	// The grace period's last instant, then its end.
	e.clk.Advance(30*time.Second + grace - time.Nanosecond)
	check(true)
	e.clk.Advance(time.Nanosecond)
	check(false)
	if e.prov.calls() != 4 {
		t.Errorf("a provider that is down must be asked again by every check: %d calls", e.prov.calls())
	}
	if seals, _ := e.store.counts(); seals != 0 {
		t.Errorf("%d seals", seals)
	}
}

func TestRefreshUnbelievableIDToken(t *testing.T) {
	tests := []struct {
		name    string
		idToken func(e *env) string
		want    error // in the chain, when set
	}{
		{"another subject", func(e *env) string { return e.idToken(map[string]any{"sub": "intruder"}) }, identity.ErrSubject},
		{"bad signature", func(e *env) string { return e.idp.SignJWTWithOtherKey(map[string]any{"sub": "u1"}) }, nil},
		{"expired", func(e *env) string {
			return e.idToken(map[string]any{"sub": "u1", "exp": e.clk.Now().Add(-time.Minute).Unix()})
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			raw := tt.idToken(e)
			e.prov.answer = func(string) (*provider.Tokens, error) {
				return &provider.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", IDToken: raw, Expiry: e.clk.Now().Add(time.Hour)}, nil
			}
			st := signedIn(t, oldTokens)
			for i := range 2 {
				res, err := e.r.Refresh(t.Context(), st)
				var over *SessionOver
				if !errors.As(err, &over) || !over.Rejected {
					t.Fatalf("call %d: %#v", i, err)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("call %d: %v, want %v in the chain", i, err, tt.want)
				}
				if res.State != nil {
					t.Errorf("call %d: answered with %+v", i, res.State)
				}
			}
			if e.prov.calls() != 1 {
				t.Errorf("%d provider calls; the verdict is kept for the window", e.prov.calls())
			}
			if seals, _ := e.store.counts(); seals != 0 {
				t.Errorf("%d seals", seals)
			}
		})
	}
}

func TestRefreshWithNewIDToken(t *testing.T) {
	e := newEnv(t, nil)
	raw := e.idToken(map[string]any{"sub": "u1", "groups": []string{"admins"}, "email": "new@example.com"})
	e.prov.answer = func(string) (*provider.Tokens, error) {
		return &provider.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", IDToken: raw, Expiry: e.clk.Now().Add(time.Hour)}, nil
	}
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	if err != nil {
		t.Fatal(err)
	}
	if res.State.Tokens().IDToken != raw || !slices.Equal(res.State.Groups, []string{"admins"}) || res.State.Email != "new@example.com" {
		t.Errorf("the refreshed ID token was not applied: %+v", res.State)
	}
}

func TestRefreshStoreUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	unavailable := fmt.Errorf("%w: redis: connection refused", session.ErrUnavailable)
	e.store.sealErrs = slices.Repeat([]error{unavailable}, StoreAttempts)
	st := signedIn(t, oldTokens)

	res, err := e.r.Refresh(t.Context(), st)
	var sf *StoreFailed
	if !errors.As(err, &sf) || !errors.Is(err, session.ErrUnavailable) {
		t.Fatalf("%#v", err)
	}
	if seals, _ := e.store.counts(); seals != StoreAttempts {
		t.Errorf("%d seals, want %d attempts", seals, StoreAttempts)
	}
	if res.State == nil || res.State == st || res.State.Tokens().RefreshToken != "rt-2" || res.Sealed != nil || res.CookieBytes != 0 {
		t.Fatalf("the new session must pass this check unsealed: %+v", res)
	}

	// A later check with the old cookie stores the same session, without
	// redeeming the rotated refresh token again.
	again, err := e.r.Refresh(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	seals, _ := e.store.counts()
	if seals != StoreAttempts+1 || e.prov.calls() != 1 {
		t.Errorf("seals %d, provider calls %d", seals, e.prov.calls())
	}
	if again.State != res.State || again.Sealed == nil || again.Sealed != e.store.lastSealed() {
		t.Errorf("second check: %+v", again)
	}
	if again.CookieBytes != again.Sealed.Size || again.CookieBytes == 0 {
		t.Errorf("the check that stored the session reports %d cookie bytes (size %d)", again.CookieBytes, again.Sealed.Size)
	}
}

func TestRefreshStoreRecovers(t *testing.T) {
	e := newEnv(t, nil)
	unavailable := fmt.Errorf("%w: timeout", session.ErrUnavailable)
	e.store.sealErrs = slices.Repeat([]error{unavailable}, StoreAttempts-1)
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	if err != nil || res.Sealed == nil || res.Status != Redeemed {
		t.Fatalf("%+v, %v", res, err)
	}
	if seals, _ := e.store.counts(); seals != StoreAttempts {
		t.Errorf("%d seals", seals)
	}
}

func TestRefreshStoreOtherErrorNotRetried(t *testing.T) {
	e := newEnv(t, nil)
	boom := errors.New("encode: boom")
	e.store.sealErrs = []error{boom}
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	var sf *StoreFailed
	if !errors.As(err, &sf) || !errors.Is(err, boom) || res.State == nil {
		t.Fatalf("%+v, %#v", res, err)
	}
	if seals, _ := e.store.counts(); seals != 1 {
		t.Errorf("%d seals of an error that is not ErrUnavailable", seals)
	}
}

func TestRefreshStoreExpired(t *testing.T) {
	e := newEnv(t, nil)
	e.store.sealErrs = []error{session.ErrExpired}
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	var over *SessionOver
	if !errors.As(err, &over) || over.Reason != "session expired during the refresh" || over.Rejected || !errors.Is(err, session.ErrExpired) {
		t.Fatalf("%#v", err)
	}
	if res.State != nil {
		t.Errorf("an expired session answered with %+v", res.State)
	}
	if seals, _ := e.store.counts(); seals != 1 {
		t.Errorf("%d seals", seals)
	}
}

// --- Coordinator --------------------------------------------------------------------

// otherReplicas is what another replica published after refreshing st.
func otherReplicas(t *testing.T, st *session.State, id string) []byte {
	t.Helper()
	next := signedIn(t, session.Tokens{AccessToken: "at-r", IDToken: "id-1", RefreshToken: "rt-r"})
	next.ID = id
	next.AccessExpiry = t0.Add(time.Hour)
	if next.Subject != st.Subject {
		t.Fatal("fixture")
	}
	payload, err := publish(&result{state: next}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

func TestCoordinatorSharesAnotherReplicasResult(t *testing.T) {
	st := signedIn(t, oldTokens)
	payload := otherReplicas(t, st, st.ID)
	var asked []string
	e := newEnv(t, fakeCoordinator(func(_ context.Context, rt string, _ func(context.Context) ([]byte, error)) ([]byte, bool, error) {
		asked = append(asked, rt)
		return payload, true, nil
	}))
	res, err := e.r.Refresh(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(asked, []string{"rt-1"}) {
		t.Errorf("coordinator asked for %v", asked)
	}
	if res.Status != Shared || res.CookieBytes != 0 || res.Sealed == nil || !res.Sealed.HasCookies() {
		t.Errorf("got %+v", res)
	}
	if res.State.ID != st.ID || res.State.Tokens().RefreshToken != "rt-r" {
		t.Errorf("not the published state: %+v", res.State)
	}
	seals, shared := e.store.counts()
	if e.prov.calls() != 0 || seals != 0 || shared != 1 {
		t.Errorf("provider calls %d, seals %d, shared %d; want Store.Shared only", e.prov.calls(), seals, shared)
	}
}

func TestCoordinatorPublishedOver(t *testing.T) {
	payload, err := publish(nil, overErr{fmt.Errorf("%w: reused", provider.ErrRefreshRejected)})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fakeCoordinator(func(context.Context, string, func(context.Context) ([]byte, error)) ([]byte, bool, error) {
		return payload, true, nil
	}))
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	var over *SessionOver
	if !errors.As(err, &over) || !over.Rejected || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("%#v", err)
	}
	if res.State != nil || e.prov.calls() != 0 {
		t.Errorf("state %+v, provider calls %d", res.State, e.prov.calls())
	}
}

func TestCoordinatorUnavailableRedeemsLocally(t *testing.T) {
	e := newEnv(t, fakeCoordinator(func(context.Context, string, func(context.Context) ([]byte, error)) ([]byte, bool, error) {
		return nil, false, fmt.Errorf("%w: dial tcp: refused", ErrUnavailable)
	}))
	res, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
	if err != nil {
		t.Fatal(err)
	}
	seals, shared := e.store.counts()
	if e.prov.calls() != 1 || seals != 1 || shared != 0 || res.Status != Redeemed || res.State.Tokens().RefreshToken != "rt-2" {
		t.Errorf("provider calls %d, seals %d, shared %d, %+v", e.prov.calls(), seals, shared, res)
	}
}

func TestCoordinatorRunsTheRedeem(t *testing.T) {
	var published []byte
	var redeemErr error
	coord := fakeCoordinator(func(ctx context.Context, _ string, redeem func(context.Context) ([]byte, error)) ([]byte, bool, error) {
		published, redeemErr = redeem(ctx)
		return published, false, redeemErr
	})

	t.Run("redeemed", func(t *testing.T) {
		e := newEnv(t, coord)
		st := signedIn(t, oldTokens)
		res, err := e.r.Refresh(t.Context(), st)
		if err != nil {
			t.Fatal(err)
		}
		seals, shared := e.store.counts()
		if res.Status != Redeemed || e.prov.calls() != 1 || seals != 1 || shared != 0 || res.CookieBytes == 0 {
			t.Errorf("provider calls %d, seals %d, shared %d, %+v", e.prov.calls(), seals, shared, res)
		}
		if len(published) == 0 || published[0] != publishedState {
			t.Fatalf("published %q", published)
		}
		// What the other replicas read is this replica's session.
		got, err := unpublish(published, st)
		if err != nil {
			t.Fatal(err)
		}
		if !got.remote {
			t.Error("an unpublished result is not marked remote")
		}
		if !bytes.Equal(encoded(t, got.state), encoded(t, res.State)) || got.state.Tokens() != res.State.Tokens() {
			t.Errorf("round trip:\n got %+v\nwant %+v", got.state, res.State)
		}
	})

	t.Run("rejected", func(t *testing.T) {
		e := newEnv(t, coord)
		e.prov.answer = func(string) (*provider.Tokens, error) { return nil, provider.ErrRefreshRejected }
		_, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
		var over *SessionOver
		if !errors.As(err, &over) || !over.Rejected || !errors.Is(err, provider.ErrRefreshRejected) {
			t.Fatalf("%#v", err)
		}
		if len(published) == 0 || published[0] != publishedOver || redeemErr != nil {
			t.Errorf("published %q, %v; want the verdict", published, redeemErr)
		}
	})

	t.Run("provider down publishes nothing", func(t *testing.T) {
		e := newEnv(t, coord)
		down := errors.New("503")
		e.prov.answer = func(string) (*provider.Tokens, error) { return nil, down }
		_, err := e.r.Refresh(t.Context(), signedIn(t, oldTokens))
		var pd *ProviderDown
		if !errors.As(err, &pd) || !errors.Is(err, down) {
			t.Fatalf("%#v", err)
		}
		if published != nil || !errors.Is(redeemErr, down) {
			t.Errorf("published %q, %v", published, redeemErr)
		}
	})
}

func TestCoordinatorBadResults(t *testing.T) {
	st := signedIn(t, oldTokens)
	tests := []struct {
		name    string
		payload []byte
		shared  bool
		want    string
	}{
		{"another session", otherReplicas(t, st, "sess-other"), true, "another session"},
		{"no result", nil, false, "no result"},
		{"unknown kind", []byte{9, 1, 2}, true, "unknown result"},
		{"corrupt state", []byte{publishedState, 0xff}, true, "another replica's refresh result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, fakeCoordinator(func(context.Context, string, func(context.Context) ([]byte, error)) ([]byte, bool, error) {
				return tt.payload, tt.shared, nil
			}))
			res, err := e.r.Refresh(t.Context(), st)
			var pd *ProviderDown
			if !errors.As(err, &pd) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%#v, want a ProviderDown about %q", err, tt.want)
			}
			// Refused: the old session passes in its grace, nothing is stored.
			if res.State != st {
				t.Errorf("answered with %+v", res.State)
			}
			if seals, shared := e.store.counts(); seals+shared != 0 || e.prov.calls() != 0 {
				t.Errorf("seals %d, shared %d, provider calls %d", seals, shared, e.prov.calls())
			}
		})
	}
}
