// Command op runs the end-to-end tests' OpenID provider (package
// github.com/extauth/extauth/e2e/op) on 127.0.0.1 until SIGINT or SIGTERM.
//
//	go run ./cmd/op -client-id extauth -client-secret secret \
//	    -redirect-uri http://127.0.0.1:8080/oauth2/callback \
//	    -post-logout-redirect-uri http://127.0.0.1:8080/
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/e2e/op"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func main() {
	var redirectURIs, postLogoutURIs stringList
	addr := flag.String("addr", "127.0.0.1:9998", "listen `address`; must be on 127.0.0.1")
	clientID := flag.String("client-id", "extauth", "client ID of the registered web client")
	clientSecret := flag.String("client-secret", "extauth-secret", "client secret of the registered web client")
	flag.Var(&redirectURIs, "redirect-uri", "registered redirect `URI` (repeatable, at least one)")
	flag.Var(&postLogoutURIs, "post-logout-redirect-uri", "registered post-logout redirect `URI` (repeatable)")
	ttl := flag.Duration("access-token-ttl", 10*time.Second, "access token lifetime (whole seconds)")
	verbose := flag.Bool("v", false, "log the OpenID provider library's messages (protocol errors) to stderr")
	flag.Parse()

	if flag.NArg() > 0 {
		fail("unexpected arguments: %q", flag.Args())
	}
	if err := op.CheckAddr(*addr); err != nil {
		fail("refusing -addr %q: it must be 127.0.0.1:<port>", *addr)
	}
	if len(redirectURIs) == 0 {
		fail("at least one -redirect-uri is required")
	}
	if *ttl <= 0 {
		fail("-access-token-ttl must be positive")
	}
	if *verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	} else {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}

	p, err := op.Start(op.Config{
		Addr:                   *addr,
		ClientID:               *clientID,
		ClientSecret:           *clientSecret,
		RedirectURIs:           redirectURIs,
		PostLogoutRedirectURIs: postLogoutURIs,
		AccessTokenTTL:         *ttl,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("issuer:   %s\nusername: %s\npassword: %s\n", p.Issuer(), op.Username, op.Password)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	if err := p.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "op: "+format+"\n", args...)
	flag.Usage()
	os.Exit(2)
}
