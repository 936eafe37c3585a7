package redisstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

func newStore(t *testing.T, o Options) (*Store, *metrics.Metrics) {
	t.Helper()
	if o.KeyPrefix == "" {
		o.KeyPrefix = "extauth:"
	}
	m := metrics.New(prometheus.NewRegistry(), "test")
	s, err := New(o, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

// raw is a plain client for looking at what extauth wrote.
func raw(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSessionsBackend(t *testing.T) {
	r := testenv.StartRedis(t)
	s, m := newStore(t, Options{Address: r.Addr})
	b := Sessions{Store: s}
	ctx := context.Background()

	if _, err := b.Get(ctx, "extauth:session:nope"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("missing key: %v, want ErrNotFound", err)
	}
	if err := b.Set(ctx, "extauth:session:a", []byte("sealed"), time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, "extauth:session:a")
	if err != nil || string(got) != "sealed" {
		t.Fatalf("get = %q, %v", got, err)
	}
	if ttl := raw(t, r.Addr).PTTL(ctx, "extauth:session:a").Val(); ttl <= 58*time.Second || ttl > time.Minute {
		t.Errorf("TTL = %v, want the session's remaining lifetime (1m)", ttl)
	}
	if err := b.Delete(ctx, "extauth:session:a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "extauth:session:a"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if n := testutil.ToFloat64(m.StoreOperations.WithLabelValues(metrics.StoreSessionGet, metrics.StoreNotFound)); n != 2 {
		t.Errorf("session_get not_found = %v, want 2", n)
	}

	r.Kill()
	start := time.Now()
	_, err = b.Get(ctx, "extauth:session:a")
	if err == nil || errors.Is(err, session.ErrNotFound) {
		t.Fatalf("redis down: %v, want an error that is not ErrNotFound", err)
	}
	// A sanity bound, not a speed goal: a dead Redis must not hold a check for long.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a dead redis held the request for %v", d)
	}
	if n := testutil.ToFloat64(m.StoreOperations.WithLabelValues(metrics.StoreSessionGet, metrics.StoreError)); n != 1 {
		t.Errorf("session_get error = %v, want 1", n)
	}
}

// TestTicketStoreInRedis: the Entra-sized token set lives in Redis behind a
// cookie of under 200 bytes; Redis holds no readable token; a refresh
// rewrites the value without a new cookie; Clear deletes it.
func TestTicketStoreInRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	s, _ := newStore(t, Options{Address: r.Addr})
	codec, err := session.NewCodec([][]byte{bytes.Repeat([]byte("k"), 32)}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ts := session.NewTicketStore(codec, session.Options{Name: "_extauth", Secure: true}, Sessions{Store: s}, "extauth:", rand.Reader, time.Now)
	entra := testenv.LoadTokenSet(t, "entra")
	st := &session.State{ID: "6f1c1b0e-2a4b-4c55-9d0e-0f6a1b2c3d4e", Subject: "sub-1", User: "sub-1", Email: "u@example.com",
		Groups: testenv.EntraGroups(), CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), AccessExpiry: time.Now().Add(time.Minute)}
	st.SetTokens(session.Tokens{AccessToken: entra.AccessToken, IDToken: entra.IDToken, RefreshToken: entra.RefreshToken})

	w := httptest.NewRecorder()
	n, err := ts.Save(w, httptest.NewRequest("GET", "/", nil), st)
	if err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != "_extauth" {
		t.Fatalf("cookies: %v", cookies)
	}
	if size := len(cookies[0].Name) + 1 + len(cookies[0].Value); size >= 200 || n != len(cookies[0].Value) {
		t.Errorf("ticket cookie is %d bytes (Save said %d), want under 200", size, n)
	}
	t.Logf("Entra-sized session in redis: cookie %d bytes", len(cookies[0].Name)+1+len(cookies[0].Value))

	ctx := context.Background()
	keys := raw(t, r.Addr).Keys(ctx, "extauth:session:*").Val()
	if len(keys) != 1 {
		t.Fatalf("redis keys: %v", keys)
	}
	dump := raw(t, r.Addr).Get(ctx, keys[0]).Val()
	for _, secret := range []string{entra.RefreshToken[:40], entra.AccessToken[20:60], "u@example.com", "sub-1"} {
		if strings.Contains(dump, secret) {
			t.Errorf("redis holds %q in the clear", secret)
		}
	}
	if ttl := raw(t, r.Addr).TTL(ctx, keys[0]).Val(); ttl < 59*time.Minute {
		t.Errorf("TTL %v, want the session's absolute expiry (1h)", ttl)
	}

	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(cookies[0])
	got, err := ts.Load(req)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens().RefreshToken != entra.RefreshToken || len(got.Groups) != 40 {
		t.Fatalf("loaded state differs: %d groups", len(got.Groups))
	}

	// A refresh stores the new tokens under the same ticket: no Set-Cookie.
	next := *got
	next.SetTokens(session.Tokens{AccessToken: "at-2", RefreshToken: "rt-2", IDToken: entra.IDToken})
	sealed, err := ts.Seal(ctx, &next)
	if err != nil {
		t.Fatal(err)
	}
	w = httptest.NewRecorder()
	ts.WriteSealed(w, req, sealed)
	if h := w.Header().Values("Set-Cookie"); len(h) != 0 {
		t.Errorf("a refresh wrote cookies: %v", h)
	}
	if again, err := ts.Load(req); err != nil || again.Tokens().RefreshToken != "rt-2" {
		t.Fatalf("after refresh: %v", err)
	}

	// Tampered ticket: invalid, not a server error.
	bad := httptest.NewRequest("GET", "/", nil)
	bad.AddCookie(&http.Cookie{Name: "_extauth", Value: cookies[0].Value[:len(cookies[0].Value)-2] + "AA"})
	if _, err := ts.Load(bad); !errors.Is(err, session.ErrInvalid) {
		t.Errorf("tampered ticket: %v", err)
	}

	ts.Clear(httptest.NewRecorder(), req)
	if _, err := ts.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("after Clear: %v, want ErrNotFound", err)
	}

	r.Kill()
	if _, err := ts.Load(req); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("redis down: %v, want ErrUnavailable", err)
	}
}

// replicas returns n coordinators, each with its own connection, as n
// extauth processes have.
func replicas(t *testing.T, addr string, n int, lease time.Duration) []*Coordinator {
	cs := make([]*Coordinator, n)
	for i := range cs {
		s, _ := newStore(t, Options{Address: addr})
		cs[i] = NewCoordinator(s, 30*time.Second)
		if lease > 0 {
			cs[i].lease = lease
		}
	}
	return cs
}

// TestCoordinatorOneRedeemAcrossReplicas: 60 concurrent refreshes of one
// token over 3 replicas make one redemption, even when the provider takes
// longer than the lock's lease (the lease is renewed); the others get the
// published result; a late check within the window gets it too.
func TestCoordinatorOneRedeemAcrossReplicas(t *testing.T) {
	r := testenv.StartRedis(t)
	cs := replicas(t, r.Addr, 3, 300*time.Millisecond)
	var redeems atomic.Int32
	redeem := func(ctx context.Context) ([]byte, error) {
		redeems.Add(1)
		time.Sleep(time.Second) // > the lease: only renewal keeps the others out
		return []byte("new-state"), nil
	}
	var wg sync.WaitGroup
	var shared, failed atomic.Int32
	for i := range 60 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, sh, err := cs[i%3].Do(ctx, "rt-1", redeem)
			if err != nil || string(got) != "new-state" {
				failed.Add(1)
				t.Errorf("check %d: %q, %v", i, got, err)
			}
			if sh {
				shared.Add(1)
			}
		})
	}
	wg.Wait()
	if n := redeems.Load(); n != 1 {
		t.Errorf("redemptions = %d, want 1", n)
	}
	if n := shared.Load(); n != 59 {
		t.Errorf("shared = %d, want 59", n)
	}
	got, sh, err := cs[2].Do(context.Background(), "rt-1", redeem)
	if err != nil || !sh || string(got) != "new-state" || redeems.Load() != 1 {
		t.Errorf("late check: %q shared=%v %v (redemptions %d)", got, sh, err, redeems.Load())
	}
	if wait := testutil.CollectAndCount(cs[0].metrics.RefreshLockWait); wait != 1 {
		t.Errorf("lock wait histogram series = %d", wait)
	}

	// The result in Redis opens only with the refresh token it replaced.
	keys := raw(t, r.Addr).Keys(context.Background(), "extauth:refresh:*").Val()
	if len(keys) != 1 || !strings.HasSuffix(keys[0], ":result") {
		t.Fatalf("refresh keys left: %v (the lock must be released)", keys)
	}
	if v := raw(t, r.Addr).Get(context.Background(), keys[0]).Val(); strings.Contains(v, "new-state") {
		t.Error("the refresh result is in Redis in the clear")
	}
}

// TestCoordinatorTakeOver: when the replica holding the lock fails (the
// provider is down), it publishes nothing and a waiting replica redeems.
func TestCoordinatorTakeOver(t *testing.T) {
	r := testenv.StartRedis(t)
	cs := replicas(t, r.Addr, 2, 0)
	started := make(chan struct{})
	var calls atomic.Int32
	first := make(chan error, 1)
	go func() {
		_, _, err := cs[0].Do(context.Background(), "rt-x", func(context.Context) ([]byte, error) {
			calls.Add(1)
			close(started)
			time.Sleep(200 * time.Millisecond)
			return nil, errors.New("provider down")
		})
		first <- err
	}()
	<-started
	got, sh, err := cs[1].Do(context.Background(), "rt-x", func(context.Context) ([]byte, error) {
		calls.Add(1)
		return []byte("ok"), nil
	})
	if err != nil || sh || string(got) != "ok" {
		t.Errorf("second replica: %q shared=%v %v, want its own redemption", got, sh, err)
	}
	if err := <-first; err == nil || calls.Load() != 2 {
		t.Errorf("first: %v, calls %d", err, calls.Load())
	}
}

// TestCoordinatorRedisDown: redeem does not run and the caller learns it
// may refresh alone.
func TestCoordinatorRedisDown(t *testing.T) {
	r := testenv.StartRedis(t)
	cs := replicas(t, r.Addr, 1, 0)
	r.Kill()
	_, _, err := cs[0].Do(context.Background(), "rt", func(context.Context) ([]byte, error) {
		t.Error("redeem ran without the lock")
		return nil, nil
	})
	if !errors.Is(err, refresh.ErrUnavailable) {
		t.Errorf("err = %v, want refresh.ErrUnavailable", err)
	}
	if n := testutil.ToFloat64(cs[0].metrics.StoreOperations.WithLabelValues(metrics.StoreRefreshLock, metrics.StoreError)); n != 1 {
		t.Errorf("refresh_lock errors = %v", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ended(l *Logouts, kind logout.Kind, key string, created time.Time) bool {
	ok, _ := l.Ended(context.Background(), kind, key, created)
	return ok
}

// TestLogoutsReachEveryReplica: a record made on one replica holds on the
// others; records made before a replica starts, and while its connection
// was down, are loaded when it (re)subscribes; a jti is used once across
// replicas.
func TestLogoutsReachEveryReplica(t *testing.T) {
	r := testenv.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func() *Logouts {
		s, _ := newStore(t, Options{Address: r.Addr})
		l := NewLogouts(s, time.Now)
		go l.Run(ctx)
		select {
		case <-l.Synced():
		case <-time.After(5 * time.Second):
			t.Fatal("logouts never synced")
		}
		return l
	}
	a, b := start(), start()
	before := time.Now().Add(-time.Minute)
	if err := a.End(ctx, logout.SID, "sid-1", time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !ended(a, logout.SID, "sid-1", before) {
		t.Error("the replica that recorded it does not hold it")
	}
	waitFor(t, "replica b to see sid-1", func() bool { return ended(b, logout.SID, "sid-1", before) })
	if ended(b, logout.SID, "sid-1", time.Now().Add(time.Second)) {
		t.Error("a session created after the logout is ended")
	}

	c := start() // joins later: loads the record
	if !ended(c, logout.SID, "sid-1", before) {
		t.Error("a replica started later did not load the record")
	}

	// A key with spaces and colons survives the announcement.
	if err := b.End(ctx, logout.Subject, "user: one two", time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica a to see the subject", func() bool { return ended(a, logout.Subject, "user: one two", before) })

	// A logout token: its jti taken, the record written and announced, in
	// one script.
	first, err := a.EndOnce(ctx, "jti-1", time.Now().Add(time.Minute), logout.SID, "sid-jti", time.Now(), time.Now().Add(time.Hour))
	if err != nil || !first {
		t.Fatalf("first use: %v %v", first, err)
	}
	waitFor(t, "replica b to see sid-jti", func() bool { return ended(b, logout.SID, "sid-jti", before) })
	if again, err := b.EndOnce(ctx, "jti-1", time.Now().Add(time.Minute), logout.SID, "sid-replayed", time.Now(), time.Now().Add(time.Hour)); err != nil || again {
		t.Errorf("replay on another replica accepted: %v %v", again, err)
	}
	time.Sleep(50 * time.Millisecond)
	if ended(a, logout.SID, "sid-replayed", before) || ended(b, logout.SID, "sid-replayed", before) {
		t.Error("a replayed jti recorded a logout")
	}

	// Redis restarts empty; a record made after it is back reaches b,
	// whose subscription went down with it.
	r.Kill()
	if err := a.End(ctx, logout.SID, "sid-2", time.Now(), time.Now().Add(time.Hour)); err == nil {
		t.Error("End with redis down reported success")
	}
	if _, err := a.EndOnce(ctx, "jti-2", time.Now().Add(time.Minute), logout.SID, "sid-2", time.Now(), time.Now().Add(time.Hour)); err == nil {
		t.Error("EndOnce with redis down reported success")
	}
	r.Start()
	// The provider's retry of the failed logout token is not a replay.
	waitFor(t, "the retried logout token", func() bool {
		first, err := a.EndOnce(ctx, "jti-2", time.Now().Add(time.Minute), logout.SID, "sid-2", time.Now(), time.Now().Add(time.Hour))
		return err == nil && first
	})
	waitFor(t, "a record after the restart", func() bool {
		_ = a.End(ctx, logout.SID, "sid-3", time.Now(), time.Now().Add(time.Hour))
		return ended(b, logout.SID, "sid-3", before)
	})
}

func TestPasswordAndDB(t *testing.T) {
	r := testenv.StartRedis(t, "requirepass s3cret")
	bad, _ := newStore(t, Options{Address: r.Addr, Password: "wrong"})
	if err := bad.Ping(context.Background()); err == nil {
		t.Error("a wrong password was accepted")
	}
	s, _ := newStore(t, Options{Address: r.Addr, Password: "s3cret", DB: 3})
	if err := (Sessions{Store: s}).Set(context.Background(), "extauth:k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Password: "s3cret", DB: 3})
	defer c.Close()
	if c.Get(context.Background(), "extauth:k").Val() != "v" {
		t.Error("the value is not in db 3")
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caPEM := writeCert(t, dir)
	r := testenv.StartRedis(t, "port 0", "tls-port {port}",
		"tls-cert-file "+filepath.Join(dir, "cert.pem"), "tls-key-file "+filepath.Join(dir, "key.pem"),
		"tls-ca-cert-file "+filepath.Join(dir, "cert.pem"), "tls-auth-clients no")
	plain, _ := newStore(t, Options{Address: r.Addr})
	if err := plain.Ping(context.Background()); err == nil {
		t.Error("plain TCP to a TLS-only redis succeeded")
	}
	s, _ := newStore(t, Options{Address: r.Addr, TLS: &TLS{CAPEM: caPEM, ServerName: "redis.test"}})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	other, _ := newStore(t, Options{Address: r.Addr, TLS: &TLS{ServerName: "redis.test"}})
	if err := other.Ping(context.Background()); err == nil {
		t.Error("TLS without the CA accepted an unknown certificate")
	}
}

// TestSentinel: the master is found through a real Sentinel.
func TestSentinel(t *testing.T) {
	master := testenv.StartRedis(t)
	port := testenv.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(
		"port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n", port, dir, master.Port)), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.StartProcess(t, "redis-server", conf, "--sentinel")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, "sentinel to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	s, _ := newStore(t, Options{MasterName: "mymaster", SentinelAddresses: []string{addr}})
	if err := (Sessions{Store: s}).Set(context.Background(), "extauth:via-sentinel", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if raw(t, master.Addr).Get(context.Background(), "extauth:via-sentinel").Val() != "v" {
		t.Error("the value did not reach the master")
	}
}

// writeCert writes a self-signed certificate for redis.test and returns its PEM.
func writeCert(t *testing.T, dir string) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis.test"}, DNSNames: []string{"redis.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

// TestRedisRestartedBetweenCommands: the pooled connection died with the
// server (no peek before each command, see New): the next command is
// retried on a new connection instead of failing.
func TestRedisRestartedBetweenCommands(t *testing.T) {
	r := testenv.StartRedis(t)
	s, m := newStore(t, Options{Address: r.Addr})
	b := Sessions{Store: s}
	ctx := context.Background()
	if err := b.Set(ctx, "extauth:session:x", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	r.Start()
	for i := range 3 { // every pooled connection is stale now
		if _, err := b.Get(ctx, "extauth:session:x"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("get %d after the restart: %v, want ErrNotFound (the restarted server is empty)", i, err)
		}
	}
	if n := testutil.ToFloat64(m.StoreOperations.WithLabelValues(metrics.StoreSessionGet, metrics.StoreError)); n != 0 {
		t.Errorf("%v errors after a restart", n)
	}
}
