package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/internal/testenv"
)

// service is an auth process under test.
type service struct {
	proc    *proc
	addr    string
	metrics string // extauth's metrics listener, "" for others
	// side is a process the auth process depends on (case 8's
	// redis-server): stopped with it, its CPU reported in the notes.
	side *proc
	// redisAddr is side's address when side is a redis-server.
	redisAddr string
}

func (s *service) stop() {
	s.proc.stop()
	s.side.stop()
}

// extauthConfig is extauth's config for the cases: its two listeners, the
// provider, and a session secret shared with sealSession. redisAddr set:
// session.store redis there. The redirect URL is extauth's own listener, so
// that a sign-in straight against it works (case 8, the storm).
func (b *bench) extauthConfig(addr, metricsAddr, redisAddr string) string {
	store := ""
	if redisAddr != "" {
		store = fmt.Sprintf("  store: redis\n  redis:\n    address: %q\n", redisAddr)
	}
	return fmt.Sprintf(`
server:
  address: %q
  metricsAddress: %q
  shutdownTimeout: 5s
  pprof: true
oidc:
  issuerURL: %q
  clientID: %q
  clientSecret: %q
  redirectURL: %q
session:
  cookieSecure: false
  secrets: [%q]
%slogging:
  level: info
  format: json
`, addr, metricsAddr, b.issuer, b.clientID, b.clientSec, "http://"+addr+"/oauth2/callback", b.secret, store)
}

// startExtauthWith runs the built extauth with the config that conf makes
// for its two listeners, and waits until /readyz answers 200 (the
// provider discovered).
func (b *bench) startExtauthWith(ctx context.Context, name string, conf func(addr, metricsAddr string) string) (*service, error) {
	port, err := testenv.PickPort()
	if err != nil {
		return nil, err
	}
	mport, err := testenv.PickPort()
	if err != nil {
		return nil, err
	}
	s := &service{addr: fmt.Sprintf("127.0.0.1:%d", port), metrics: fmt.Sprintf("127.0.0.1:%d", mport)}
	file := filepath.Join(b.dir, name+".yaml")
	if err := os.WriteFile(file, []byte(conf(s.addr, s.metrics)), 0o600); err != nil {
		return nil, err
	}
	if s.proc, err = b.ps.start(name, filepath.Join(b.dir, name+".log"), syscall.SIGTERM, b.extauth, "serve", "--config", file); err != nil {
		return nil, err
	}
	if err := testenv.WaitHTTP(ctx, "http://"+s.addr+"/readyz", 15*time.Second, testenv.WantStatus(http.StatusOK), testenv.Alive(s.proc.alive)); err != nil {
		s.proc.stop()
		return nil, fmt.Errorf("%w: %s", err, s.proc.tail())
	}
	return s, nil
}

// startExtauth is extauth with the cookie store (the default): the session
// is the sealed Okta-sized cookie.
func (b *bench) startExtauth(ctx context.Context) (*service, error) {
	return b.startExtauthWith(ctx, "extauth", func(addr, metricsAddr string) string {
		return b.extauthConfig(addr, metricsAddr, "")
	})
}

// startExtauthRedis is case 8: a fresh redis-server, extauth with
// session.store redis on it, and a real sign-in against the fake provider
// (the cookie holds only a ticket; the Okta-sized session is in Redis).
func (b *bench) startExtauthRedis(ctx context.Context) (*service, error) {
	rp, raddr, err := startRedis(ctx, b.ps, b.redisBin, filepath.Join(b.dir, "redis"))
	if err != nil {
		return nil, err
	}
	s, err := b.startExtauthWith(ctx, "extauth-redis", func(addr, metricsAddr string) string {
		return b.extauthConfig(addr, metricsAddr, raddr)
	})
	if err != nil {
		rp.stop()
		return nil, err
	}
	s.side, s.redisAddr = rp, raddr
	name := b.cfg.Session.CookieName
	cookie, err := signIn(ctx, "http://"+s.addr+"/oauth2/start?rd=%2F", func(n string) bool {
		return n == name || strings.HasPrefix(n, name+"_") && !strings.HasSuffix(n, "_csrf")
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("sign-in: %w: %s", err, s.proc.tail())
	}
	// The session must be in Redis, not in the cookie.
	if n, err := redisCommand(raddr, "DBSIZE"); err != nil || n == ":0" {
		s.stop()
		return nil, fmt.Errorf("after the sign-in, redis DBSIZE answered %q (%v): no session in Redis", n, err)
	}
	if n := cookieHeaderSize(cookie); n > 400 {
		s.stop()
		return nil, fmt.Errorf("the redis store's cookie is %d B: a whole session, not a ticket", n)
	}
	b.redisCookie = cookie
	return s, nil
}

// stormExtauth runs the storm's extauth as the cases run theirs: the built
// binary, a process of its own.
func (b *bench) stormExtauth(ctx context.Context, conf func(addr, metricsAddr string) string) (*stormServer, error) {
	s, err := b.startExtauthWith(ctx, "extauth-storm", conf)
	if err != nil {
		return nil, err
	}
	return &stormServer{base: "http://" + s.addr, metrics: "http://" + s.metrics, pid: s.proc.pid(), stop: s.stop}, nil
}

func (b *bench) startFloorGo(ctx context.Context) (*service, error) {
	port, err := testenv.PickPort()
	if err != nil {
		return nil, err
	}
	s := &service{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if s.proc, err = b.ps.start("floor-go", filepath.Join(b.dir, "floor-go.log"), syscall.SIGTERM, b.self, "floor-go", s.addr); err != nil {
		return nil, err
	}
	if err := testenv.WaitHTTP(ctx, "http://"+s.addr+"/", 10*time.Second, testenv.Alive(s.proc.alive)); err != nil {
		s.proc.stop()
		return nil, err
	}
	return s, nil
}

// serveFloor is case floor-go's auth service: the least a Go net/http server
// can do for a check, answer 200.
func serveFloor(addr string) {
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func (b *bench) startOAuth2Proxy(ctx context.Context) (*service, error) {
	p, err := b.o2p.start(ctx, b.ps, b.dir)
	if err != nil {
		return nil, err
	}
	return &service{proc: p, addr: b.o2p.Addr}, nil
}
