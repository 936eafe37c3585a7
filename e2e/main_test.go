// Package e2e holds the end-to-end tests: Debian's nginx with the reference
// config, a real OpenID provider, extauth and Debian's chromium, on loopback.
package e2e

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// zitadel's provider logs expected refusals (a revoked refresh token)
	// through the process-wide logger; keep test output to what tests say.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
