// Command loadbench is extauth's load benchmark (`make bench-load`): on
// loopback, on one machine, in one run, it measures nginx auth_request in
// front of nothing (floor-nginx), of a minimal Go server (floor-go), of
// extauth (cookie store, 401 path, redis store) and of oauth2-proxy, and
// the two services checked directly, with wrk; then a refresh storm against
// a provider with rotation and reuse detection. It prints markdown tables and writes them to bench/RESULTS.md.
//
// See bench/README.md.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "floor-go" {
		serveFloor(os.Args[2])
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-load:", err)
		os.Exit(1)
	}
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

type options struct {
	wrk                wrkParams
	nginxWorkers       int
	o2pVersion, o2pBin string
	noO2P, noStorm     bool
	noRedis            bool
	redisBin           string
	storm              stormOptions
	out, profile       string
	note               string
	only               string
	rounds             int
	tokenset           string
	timeout            time.Duration
	keep               bool
}

func run() error {
	var o options
	flag.DurationVar(&o.wrk.Duration, "duration", 10*time.Second, "measured wrk run per case")
	flag.DurationVar(&o.wrk.Warmup, "warmup", 3*time.Second, "wrk warm-up before each measured run (0: none)")
	flag.IntVar(&o.wrk.Threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.wrk.Connections, "connections", 64, "wrk connections")
	flag.IntVar(&o.nginxWorkers, "nginx-workers", 2, "nginx worker_processes, the same for every case")
	flag.StringVar(&o.o2pVersion, "oauth2-proxy-version", "v7.15.6", "oauth2-proxy version to go install into a temporary folder")
	flag.StringVar(&o.o2pBin, "oauth2-proxy", "", "an oauth2-proxy binary to use instead of installing one")
	flag.BoolVar(&o.noO2P, "no-oauth2-proxy", false, "skip the oauth2-proxy cases")
	flag.BoolVar(&o.noStorm, "no-storm", false, "skip the refresh storm")
	flag.BoolVar(&o.noRedis, "no-redis", false, "skip case 8 (extauth with session.store redis)")
	flag.StringVar(&o.redisBin, "redis-server", "", "the redis-server binary for case 8 (default: redis-server on PATH, or /usr/bin/redis-server)")
	flag.IntVar(&o.storm.Sessions, "storm-sessions", 200, "refresh storm: distinct sessions")
	flag.IntVar(&o.storm.PerSession, "storm-per-session", 20, "refresh storm: concurrent checks per session")
	flag.StringVar(&o.out, "out", "", `where to write the results (default bench/RESULTS.md; "-": nowhere)`)
	flag.StringVar(&o.profile, "profile", "", "also take a 10 s CPU profile of extauth under load (through nginx) into this file and print its top")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of all cases, interleaved; each case reports its median round")
	flag.StringVar(&o.only, "cases", "", "run only these cases, comma-separated keys (floor-nginx, floor-go, extauth, oauth2-proxy, extauth-direct, oauth2-proxy-direct, extauth-401, extauth-redis, floor-go-direct); default all")
	flag.StringVar(&o.note, "note", "", "a line for the results' header (say, what else ran on the machine)")
	flag.StringVar(&o.tokenset, "tokenset", "", "the Okta token set (default ../shared/testdata/tokensets/okta.json beside the repository)")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "bound on the whole run")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (configs, logs)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	b, err := newBench(ctx, o)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		return err
	}
	return b.run(ctx)
}

// bench holds what the cases share.
type bench struct {
	profiled  bool // the -profile of extauth is taken (once, in the first round)
	o         options
	repoRoot  string
	benchDir  string
	dir       string // temporary: binaries, configs, logs
	ps        *procs
	idp       *providertest.Provider
	nginx     *nginxSetup
	extauth   string // binary
	issuer    string
	clientID  string
	clientSec string
	secret    string // extauth's session secret (base64)
	cfg       *config.Config
	cookie    string // extauth's Okta-sized session
	cookieLen int
	o2p       *oauth2Proxy
	o2pCookie string
	o2pWhy    string // why oauth2-proxy is unavailable
	redisBin  string
	redisWhy  string // why case 8 is unavailable
	// redisCookie is case 8's ticket cookie, from a sign-in against each
	// fresh extauth (its session lives in that case's redis-server).
	redisCookie string
	self        string // this program, for floor-go
	machine     machineInfo
}

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, ps: &procs{}}
	var err error
	if b.repoRoot, err = findModuleRoot("github.com/extauth/extauth"); err != nil {
		return nil, err
	}
	b.benchDir = filepath.Join(b.repoRoot, "bench")
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk not found: apt-get install -y wrk")
	}
	if b.nginx, err = findNginx(b.repoRoot, o.nginxWorkers); err != nil {
		return nil, err
	}
	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "extauth-bench-"); err != nil {
		return nil, err
	}
	b.machine = readMachine(b.nginx)
	if o.tokenset == "" {
		o.tokenset = filepath.Join(b.repoRoot, "..", "shared", "testdata", "tokensets", "okta.json")
	}
	ts, claims, err := loadTokenSet(o.tokenset)
	if err != nil {
		return b, err
	}

	// The provider (on the real clock) for discovery and the sign-ins.
	if b.idp, err = oktaShapedProvider(ts, claims); err != nil {
		return b, err
	}
	b.issuer, b.clientID, b.clientSec = b.idp.Issuer, b.idp.ClientID, b.idp.ClientSecret

	logf("building extauth (as make build does)")
	b.extauth = filepath.Join(b.dir, "extauth")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.extauth, "./cmd/extauth")
	build.Dir = b.repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return b, fmt.Errorf("build extauth: %v\n%s", err, out)
	}

	// extauth's session: sealed here with the secret its config gets.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b.secret = base64.StdEncoding.EncodeToString(secret)
	if b.cfg, err = config.Parse([]byte(b.extauthConfig("127.0.0.1:1", "127.0.0.1:2", ""))); err != nil {
		return b, fmt.Errorf("extauth config: %w", err)
	}
	if b.cookie, b.cookieLen, err = sealSession(b.cfg, ts, claims); err != nil {
		return b, fmt.Errorf("seal the Okta session: %w", err)
	}

	if o.noRedis {
		b.redisWhy = "skipped (-no-redis)"
	} else if o.only != "" && !strings.Contains(o.only, "extauth-redis") {
		b.redisWhy = "not selected (-cases)"
	} else if b.redisBin, err = findRedis(o.redisBin); err != nil {
		return b, fmt.Errorf("%w (or -no-redis)", err)
	}

	// oauth2-proxy, installed into the temporary folder; never fatal.
	if o.noO2P {
		b.o2pWhy = "skipped (-no-oauth2-proxy)"
	} else if o.only != "" && !strings.Contains(o.only, "oauth2-proxy") {
		b.o2pWhy = "not selected (-cases)"
	} else {
		b.prepareOAuth2Proxy(ctx)
	}
	return b, nil
}

func (b *bench) close() {
	b.ps.stopAll()
	if b.idp != nil {
		b.idp.Close()
	}
	if b.dir != "" {
		if b.o.keep {
			logf("kept %s", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}
}

func (b *bench) prepareOAuth2Proxy(ctx context.Context) {
	bin := b.o.o2pBin
	if bin == "" {
		logf("installing oauth2-proxy %s into %s (go install; a few minutes on a cold cache)", b.o.o2pVersion, b.dir)
		var err error
		if bin, err = installOAuth2Proxy(ctx, filepath.Join(b.dir, "oauth2-proxy"), b.o.o2pVersion, 10*time.Minute); err != nil {
			b.o2pWhy = "go install failed: " + err.Error()
			return
		}
		b.machine.OAuth2Proxy = b.o.o2pVersion + " (go install, " + runtime.Version() + ")"
	} else {
		b.machine.OAuth2Proxy = bin
	}
	o2p, err := newOAuth2Proxy(bin, b.issuer, b.clientID, b.clientSec)
	if err != nil {
		b.o2pWhy = err.Error()
		return
	}
	p, err := o2p.start(ctx, b.ps, b.dir)
	if err != nil {
		b.o2pWhy = "does not start: " + oneLine(err.Error())
		return
	}
	defer p.stop()
	cookie, err := o2p.signIn(ctx)
	if err != nil {
		b.o2pWhy = "sign-in failed: " + oneLine(err.Error())
		return
	}
	b.o2p, b.o2pCookie = o2p, cookie
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

// startExtauthWith runs the built extauth with the config that conf makes
// for its two listeners, and waits until /readyz answers 200 (the
// provider discovered).
func (b *bench) startExtauthWith(ctx context.Context, name string, conf func(addr, metricsAddr string) string) (*service, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
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
	if err := waitHTTP(ctx, s.proc, "http://"+s.addr+"/readyz", 15*time.Second); err != nil {
		s.proc.stop()
		return nil, err
	}
	if err := waitStatus(ctx, "http://"+s.addr+"/readyz", http.StatusOK, 15*time.Second); err != nil {
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

func (b *bench) startFloorGo(ctx context.Context) (*service, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &service{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if s.proc, err = b.ps.start("floor-go", filepath.Join(b.dir, "floor-go.log"), syscall.SIGTERM, b.self, "floor-go", s.addr); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, s.proc, "http://"+s.addr+"/", 10*time.Second); err != nil {
		s.proc.stop()
		return nil, err
	}
	return s, nil
}

func (b *bench) startOAuth2Proxy(ctx context.Context) (*service, error) {
	p, err := b.o2p.start(ctx, b.ps, b.dir)
	if err != nil {
		return nil, err
	}
	return &service{proc: p, addr: b.o2p.Addr}, nil
}

// caseDef is one row of the table.
type caseDef struct {
	key, name, what string
	service         func(context.Context) (*service, error) // nil: no auth process
	viaNginx        bool
	path            string // direct: the check's path
	cookie          func() string
	want            int    // the status the client must see
	unavailable     string // set: the row only says why
}

// caseResult is a measured row.
type caseResult struct {
	caseDef
	w        *wrkResult
	authCPU  float64 // auth process CPU seconds per 10k requests; <0: none
	nginxCPU float64 // nginx's, <0: not in the path
	rss      int64   // auth process VmHWM
	// redisPerCheck is case 8's Redis commands per request; 0 elsewhere.
	redisPerCheck float64
	notes         []string
	profileTop    string
}

func (b *bench) cases() []caseDef {
	o2pWhy := b.o2pWhy
	noCookie := func() string { return "" }
	extauthCookie := func() string { return b.cookie }
	o2pCookie := func() string { return b.o2pCookie }
	redisCookie := func() string { return b.redisCookie }
	return []caseDef{
		{key: "floor-nginx", name: "1. floor-nginx", what: "nginx auth_request to a location that answers 200 itself", viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "floor-go", name: "2. floor-go", what: "nginx auth_request → minimal Go net/http server answering 200", service: b.startFloorGo, viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "extauth", name: "3. extauth", what: "nginx auth_request → extauth /oauth2/auth, valid Okta-sized session", service: b.startExtauth, viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "oauth2-proxy", name: "4. oauth2-proxy " + b.o.o2pVersion, what: "nginx auth_request → oauth2-proxy /oauth2/auth, valid session", service: b.startOAuth2Proxy, viaNginx: true, cookie: o2pCookie, want: 200, unavailable: o2pWhy},
		{key: "extauth-direct", name: "5. extauth, direct", what: "GET /oauth2/auth on extauth, no nginx", service: b.startExtauth, path: "/oauth2/auth", cookie: extauthCookie, want: 200},
		{key: "oauth2-proxy-direct", name: "6. oauth2-proxy, direct", what: "GET /oauth2/auth on oauth2-proxy, no nginx (202)", service: b.startOAuth2Proxy, path: "/oauth2/auth", cookie: o2pCookie, want: 202, unavailable: o2pWhy},
		{key: "extauth-401", name: "7. extauth 401 path", what: "no cookie, through nginx: extauth 401 → nginx 302 to /oauth2/start", service: b.startExtauth, viaNginx: true, cookie: noCookie, want: 302},
		{key: "extauth-redis", name: "8. extauth, redis store", what: "nginx auth_request → extauth /oauth2/auth with `session.store: redis` (redis-server on loopback, no persistence); the session from a real sign-in against the fake provider, the cookie a ticket", service: b.startExtauthRedis, viaNginx: true, cookie: redisCookie, want: 200, unavailable: b.redisWhy},
		{key: "floor-go-direct", name: "9. floor-go, direct", what: "GET on the minimal Go server, no nginx (the limit for case 5)", service: b.startFloorGo, path: "/oauth2/auth", cookie: extauthCookie, want: 200},
	}
}

// runCases measures every selected case, -rounds times, the rounds
// interleaved (case 1, 2, …, then again) so that a noisy moment of the
// machine spreads over all cases instead of hitting one. Each case reports
// its median round by requests/s, with the median CPU per 10k of its
// rounds and the highest peak RSS. A case that fails ends the run, except
// oauth2-proxy's, which only become "unavailable".
func (b *bench) runCases(ctx context.Context) ([]*caseResult, error) {
	logf("cases: %s, nginx worker_processes %d, same for every case, %d rounds", b.o.wrk, b.o.nginxWorkers, b.o.rounds)
	cases, err := b.selectCases()
	if err != nil {
		return nil, err
	}
	rounds := make([][]*caseResult, len(cases))
	for round := range max(b.o.rounds, 1) {
		for i, c := range cases {
			if c.unavailable != "" {
				continue
			}
			r, err := b.measure(ctx, c)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if err != nil {
				if strings.HasPrefix(c.key, "oauth2-proxy") {
					// oauth2-proxy never fails the whole run.
					cases[i].unavailable = oneLine(err.Error())
					logf("%s: unavailable: %v", c.name, err)
					continue
				}
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			logf("round %d, %s: %.0f req/s, p50 %s, p99 %s %s", round+1, c.name, r.w.RPS, fmtDur(r.w.P50), fmtDur(r.w.P99), strings.Join(r.notes, "; "))
			rounds[i] = append(rounds[i], r)
		}
	}
	var results []*caseResult
	for i, c := range cases {
		if c.unavailable != "" || len(rounds[i]) == 0 {
			logf("%s: unavailable: %s", c.name, c.unavailable)
			results = append(results, &caseResult{caseDef: c})
			continue
		}
		results = append(results, medianRound(rounds[i]))
	}
	return results, nil
}

// medianRound is the round with the median requests/s, carrying the median
// CPU figures and the highest peak RSS of all rounds.
func medianRound(rs []*caseResult) *caseResult {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b *caseResult) int { return cmp.Compare(a.w.RPS, b.w.RPS) })
	med := *sorted[len(sorted)/2]
	median := func(f func(*caseResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	med.authCPU = median(func(r *caseResult) float64 { return r.authCPU })
	med.nginxCPU = median(func(r *caseResult) float64 { return r.nginxCPU })
	for _, r := range rs {
		med.rss = max(med.rss, r.rss)
		if r.profileTop != "" {
			med.profileTop = r.profileTop
		}
	}
	return &med
}

// selectCases is b.cases() narrowed by -cases.
func (b *bench) selectCases() ([]caseDef, error) {
	all := b.cases()
	if b.o.only == "" {
		return all, nil
	}
	var out []caseDef
	for _, k := range strings.Split(b.o.only, ",") {
		k = strings.TrimSpace(k)
		i := slices.IndexFunc(all, func(c caseDef) bool { return c.key == k })
		if i < 0 {
			return nil, fmt.Errorf("-cases: no case %q", k)
		}
		out = append(out, all[i])
	}
	return out, nil
}

func (b *bench) run(ctx context.Context) error {
	results, err := b.runCases(ctx)
	if err != nil {
		return err
	}

	var storm *stormResult
	var stormErr error
	if !b.o.noStorm {
		logf("refresh storm: %d sessions × %d concurrent checks", b.o.storm.Sessions, b.o.storm.PerSession)
		stormCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		storm, stormErr = runStorm(stormCtx, b.o.storm, b.stormExtauth)
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}

	report := b.report(results, storm, stormErr)
	fmt.Println()
	fmt.Print(report)
	out := b.o.out
	if out == "" {
		out = filepath.Join(b.benchDir, "RESULTS.md")
	}
	if out != "-" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			return err
		}
		logf("wrote %s", out)
	}
	if stormErr != nil {
		return fmt.Errorf("refresh storm: %w", stormErr)
	}
	if storm != nil {
		if err := storm.OK(); err != nil {
			return fmt.Errorf("refresh storm: %w", err)
		}
	}
	return nil
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

// measure runs one case: fresh processes (so that peak RSS is this case's),
// a check of the expected status, a warm-up, the measured run between two
// readings of /proc, and a second check of the status.
func (b *bench) measure(ctx context.Context, c caseDef) (*caseResult, error) {
	r := &caseResult{caseDef: c, authCPU: -1, nginxCPU: -1}
	var svc *service
	var err error
	if c.service != nil {
		if svc, err = c.service(ctx); err != nil {
			return nil, err
		}
		defer svc.stop()
	}
	var ngx *nginxInstance
	url := ""
	if c.viaNginx {
		authAddr := ""
		if svc != nil {
			authAddr = svc.addr
		}
		if ngx, err = b.nginx.start(ctx, b.ps, filepath.Join(b.dir, "nginx-"+c.key), authAddr, svc == nil); err != nil {
			return nil, err
		}
		defer ngx.proc.stop()
		url = ngx.URL
	} else {
		url = "http://" + svc.addr + c.path
	}
	headers := []string{"X-Original-URL: http://app.example/", "X-Original-Method: GET"}
	if c.viaNginx {
		headers = nil // nginx sets them for the auth subrequest
	}
	if ck := c.cookie(); ck != "" {
		headers = append(headers, "Cookie: "+ck)
	}

	if err := expectStatus(ctx, url, headers, c.want); err != nil {
		return nil, fmt.Errorf("before the run: %w", err)
	}
	if b.o.wrk.Warmup > 0 {
		if _, err := runWrk(ctx, b.o.wrk, b.o.wrk.Warmup, url, headers); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}

	before, err := b.readCounters(svc, ngx)
	if err != nil {
		return nil, err
	}
	if r.w, err = runWrk(ctx, b.o.wrk, b.o.wrk.Duration, url, headers); err != nil {
		return nil, err
	}
	after, err := b.readCounters(svc, ngx)
	if err != nil {
		return nil, err
	}
	per10k := func(ticks int64) float64 {
		return float64(ticks) / clockTicks / float64(max(r.w.Requests, 1)) * 10000
	}
	if svc != nil {
		r.authCPU = per10k(after.auth - before.auth)
		if r.rss, err = peakRSS(svc.proc.pid()); err != nil {
			return nil, err
		}
	}
	if ngx != nil {
		r.nginxCPU = per10k(after.nginx - before.nginx)
	}
	if svc != nil && svc.side != nil {
		r.notes = append(r.notes, fmt.Sprintf("%s CPU s / 10k: %.3f", svc.side.name, per10k(after.side-before.side)))
	}
	if svc != nil && svc.redisAddr != "" {
		// Less the INFO of the second reading.
		n := after.redisCommands - before.redisCommands - 1
		r.redisPerCheck = float64(n) / float64(max(r.w.Requests, 1))
		r.notes = append(r.notes, fmt.Sprintf("Redis commands per check: %.2f", r.redisPerCheck))
	}
	if s := r.w.errorSummary(); s != "" {
		r.notes = append(r.notes, s)
	}
	// extauth counts its own answers: they must match what wrk saw (give or
	// take the requests in flight when wrk stopped).
	if svc != nil && svc.metrics != "" {
		result := "authenticated"
		if c.want != 200 {
			result = "unauthenticated"
		}
		n := after.checks[result] - before.checks[result]
		if d := n - float64(r.w.Requests); d < 0 || d > float64(2*b.o.wrk.Connections) {
			r.notes = append(r.notes, fmt.Sprintf("extauth counted %.0f %s checks for %d requests", n, result, r.w.Requests))
		}
	}
	if err := expectStatus(ctx, url, headers, c.want); err != nil {
		return nil, fmt.Errorf("after the run: %w", err)
	}
	if b.o.profile != "" && c.key == "extauth" && !b.profiled {
		b.profiled = true
		if r.profileTop, err = b.profileExtauth(ctx, svc, url, headers); err != nil {
			r.notes = append(r.notes, "profile: "+oneLine(err.Error()))
		}
	}
	return r, nil
}

type counters struct {
	auth, nginx, side int64
	redisCommands     int64              // total_commands_processed of the case's redis-server
	checks            map[string]float64 // extauth_auth_requests_total{endpoint="auth"} by result
}

func (b *bench) readCounters(svc *service, ngx *nginxInstance) (counters, error) {
	var c counters
	var err error
	if svc != nil {
		if c.auth, err = cpuTicks(svc.proc.pid()); err != nil {
			return c, err
		}
		if svc.side != nil {
			if c.side, err = cpuTicks(svc.side.pid()); err != nil {
				return c, err
			}
		}
		if svc.redisAddr != "" {
			if c.redisCommands, err = redisCommands(svc.redisAddr); err != nil {
				return c, err
			}
		}
		if svc.metrics != "" {
			if c.checks, err = scrapeMetric(context.Background(), "http://"+svc.metrics+"/metrics", `extauth_auth_requests_total{endpoint="auth"`, "result"); err != nil {
				return c, err
			}
		}
	}
	if ngx != nil {
		if c.nginx, err = groupTicks(ngx.proc.pid()); err != nil {
			return c, err
		}
	}
	return c, nil
}

// profileExtauth takes a 10 s CPU profile while wrk loads extauth again.
func (b *bench) profileExtauth(ctx context.Context, svc *service, url string, headers []string) (string, error) {
	logf("profiling extauth for 10 s under the same load")
	type wrkDone struct{ err error }
	done := make(chan wrkDone, 1)
	go func() {
		_, err := runWrk(ctx, b.o.wrk, 12*time.Second, url, headers)
		done <- wrkDone{err}
	}()
	time.Sleep(time.Second)
	client := &http.Client{Timeout: 30 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svc.metrics+"/debug/pprof/profile?seconds=10", nil)
	resp, err := client.Do(req)
	if err != nil {
		<-done
		return "", err
	}
	defer resp.Body.Close()
	f, err := os.Create(b.o.profile)
	if err != nil {
		<-done
		return "", err
	}
	_, err = io.Copy(f, resp.Body)
	f.Close()
	if d := <-done; d.err != nil {
		return "", d.err
	}
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", b.extauth, b.o.profile).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	return string(out), nil
}

// expectStatus makes one request and checks its status.
func expectStatus(ctx context.Context, url string, headers []string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: noRedirect, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, want)
	}
	return nil
}

// scrapeMetric sums, per value of label, the samples of a Prometheus text
// exposition whose line starts with prefix (a name, or a name and the first
// labels).
func scrapeMetric(ctx context.Context, url, prefix, label string) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		if rest := line[len(prefix):]; rest == "" || (rest[0] != '{' && rest[0] != ' ' && rest[0] != ',' && rest[0] != '}') {
			continue // another metric whose name starts with prefix
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := ""
		if j := strings.Index(line, label+`="`); j >= 0 {
			rest := line[j+len(label)+2:]
			key = rest[:strings.IndexByte(rest, '"')]
		}
		out[key] += v
	}
	return out, sc.Err()
}

// findModuleRoot walks up from the working directory to the folder whose
// go.mod declares module.
func findModuleRoot(module string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module "+module+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", module)
		}
		dir = parent
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
