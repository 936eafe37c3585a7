// Command demo runs the whole extauth flow on loopback — nginx with the
// reference config, a real OpenID provider, extauth, and an app that shows
// who signed in — prints where to go, and stops everything on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/extauth/extauth/e2e/op"
	"github.com/extauth/extauth/e2e/stack"
)

func main() {
	port := flag.Int("port", 8080, "port of the protected app (nginx) on 127.0.0.1")
	opPort := flag.Int("op-port", 9998, "port of the OpenID provider on 127.0.0.1")
	ttl := flag.Duration("access-token-ttl", 30*time.Second, "the provider's access-token lifetime (short, to watch refreshes)")
	verbose := flag.Bool("v", false, "print extauth's logs")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	s, err := stack.Start(ctx, stack.Options{
		NginxPort:      *port,
		OPPort:         *opPort,
		AccessTokenTTL: *ttl,
		RefreshBefore:  5 * time.Second,
		Log:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	defer s.Stop()
	fmt.Printf(`
extauth demo is running.

  Open:       %s/
  Sign in as: %s / %s
  Sign out:   %s/oauth2/sign_out

  Provider:   %s (access tokens live %s: watch them refresh)
  Files:      %s (nginx config and logs)

Ctrl-C stops everything.
`, s.URL, op.Username, op.Password, s.URL, s.OP.Issuer(), *ttl, s.Dir)
	<-ctx.Done()
	fmt.Println("\nstopping…")
}
