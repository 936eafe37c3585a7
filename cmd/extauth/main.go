// Command extauth is the external-auth service for nginx auth_request,
// Traefik, Envoy and Caddy.
//
//	extauth serve --config FILE        (the default command)
//	extauth check-config --config FILE
//	extauth keygen [--assertion]
//	extauth version
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logbuf"
	"github.com/extauth/extauth/pkg/server"
)

// Set with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "check-config":
		return checkConfig(args, stdout, stderr)
	case "keygen":
		return keygen(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "extauth %s (commit %s, %s)\n", version, commit, runtime.Version())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "extauth: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  extauth [serve] --config FILE   run the service (FILE may also come from EXTAUTH_CONFIG)
  extauth check-config --config FILE
                                  validate FILE; exit 0, or print every problem and exit 1
  extauth keygen                  print a new session secret (base64, 32 bytes)
  extauth keygen --assertion      print a new assertion signing key (PEM, EC P-256)
  extauth version                 print the version
`)
}

// configFlag parses --config, defaulting to $EXTAUTH_CONFIG.
func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("EXTAUTH_CONFIG"), "config file (default $EXTAUTH_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "extauth %s: unexpected arguments %q\n", name, fs.Args())
		return "", false
	}
	if *path == "" {
		fmt.Fprintf(stderr, "extauth %s: no config file: pass --config FILE or set EXTAUTH_CONFIG\n", name)
		return "", false
	}
	return *path, true
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("check-config", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%s\n", path, indent(err))
		return 1
	}
	fmt.Fprintf(stdout, "%s: configuration OK\n", path)
	for _, line := range cfg.Summary() {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return 0
}

func indent(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	forAssertion := fs.Bool("assertion", false, "print a new assertion signing key (PKCS#8 PEM, EC P-256) instead")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "extauth keygen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *forAssertion {
		key, err := assertion.GenerateKey(rand.Reader)
		if err != nil {
			fmt.Fprintf(stderr, "extauth keygen: %v\n", err)
			return 1
		}
		_, _ = stdout.Write(key)
		return 0
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintf(stderr, "extauth keygen: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(b))
	return 0
}

func serve(args []string, stderr io.Writer) int {
	path, ok := configFlag("serve", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%s\n", path, indent(err))
		return 1
	}
	if os.Getenv("GOGC") == "" {
		// The live heap is a few MB and every check allocates a few KB: at
		// the default 100 % the collector runs many times a second under
		// load. 200 % halves that for a few MB more (peak RSS stays near 30
		// MB under load). GOGC in the environment still decides.
		debug.SetGCPercent(gcPercent)
	}
	// One line per request: batched into a write every 100 ms, not one each.
	logs := logbuf.New(stderr, logFlushInterval)
	defer logs.Close()
	log := newLogger(cfg, logs)
	log.Info("starting extauth", "version", version, "commit", commit, "config", path)
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: " + w)
	}
	srv, err := server.New(cfg, log, version)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("server stopped", "error", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// logFlushInterval bounds how late a log line appears (and what a crash
// can lose); a normal shutdown flushes everything.
const logFlushInterval = 100 * time.Millisecond

// gcPercent is extauth's GOGC unless the environment sets one.
const gcPercent = 200

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel()}
	if cfg.Logging.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
