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
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/internal/testenv"
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
	if b.repoRoot, err = testenv.FindRepoRoot(); err != nil {
		return nil, err
	}
	b.benchDir = filepath.Join(b.repoRoot, "bench")
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk not found: apt-get install -y wrk")
	}
	if b.nginx, err = findNginx(o.nginxWorkers); err != nil {
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
		o.tokenset = testenv.TokenSetPath(b.repoRoot, "okta")
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
