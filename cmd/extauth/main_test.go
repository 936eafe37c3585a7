package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

const validConfig = `
oidc:
  issuerURL: https://idp.example.com
  clientID: extauth
  clientSecret: s3cret
session:
  secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantCode int
		wantErr  []string
	}{
		{"valid", validConfig, 0, nil},
		{"unknown key", validConfig + "server:\n  adress: \":80\"\n", 1, []string{`server.adress`}},
		{"missing issuer", strings.Replace(validConfig, "issuerURL: https://idp.example.com", "", 1), 1, []string{"oidc.issuerURL"}},
		{"several problems at once", "oidc:\n  clientID: x\n  bogus: 1\n", 1, []string{"oidc.bogus", "oidc.issuerURL", "session.secrets"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"check-config", "--config", writeConfig(t, tc.body)}, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr.String())
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not name %q:\n%s", want, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "s3cret") {
				t.Error("an error message shows the client secret")
			}
		})
	}
}

func TestCheckConfigFromEnv(t *testing.T) {
	t.Setenv("EXTAUTH_CONFIG", writeConfig(t, validConfig))
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	t.Setenv("EXTAUTH_CONFIG", "")
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "EXTAUTH_CONFIG") {
		t.Errorf("no config: exit %d, stderr %s", code, stderr.String())
	}
}

func TestKeygen(t *testing.T) {
	var a, b, stderr bytes.Buffer
	if run([]string{"keygen"}, &a, &stderr) != 0 || run([]string{"keygen"}, &b, &stderr) != 0 {
		t.Fatal(stderr.String())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.String()))
	if err != nil || len(key) < 32 {
		t.Fatalf("keygen printed %q: %v, %d bytes", a.String(), err, len(key))
	}
	if a.String() == b.String() {
		t.Error("two keygen runs printed the same secret")
	}
	// The printed secret is accepted as session.secrets.
	body := strings.Replace(validConfig, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", strings.TrimSpace(a.String()), 1)
	if code := run([]string{"check-config", "--config", writeConfig(t, body)}, &a, &stderr); code != 0 {
		t.Errorf("keygen's secret rejected: %s", stderr.String())
	}
}

// TestKeygenAssertion: keygen --assertion prints a PEM key that
// check-config accepts as assertion.keyFile; a broken key file is named.
func TestKeygenAssertion(t *testing.T) {
	var key, other, stderr bytes.Buffer
	if run([]string{"keygen", "--assertion"}, &key, &stderr) != 0 || run([]string{"keygen", "--assertion"}, &other, &stderr) != 0 {
		t.Fatal(stderr.String())
	}
	if !strings.HasPrefix(key.String(), "-----BEGIN PRIVATE KEY-----\n") || key.String() == other.String() {
		t.Fatalf("keygen --assertion printed %q", key.String())
	}
	dir := t.TempDir()
	keyFile, broken := filepath.Join(dir, "assertion.pem"), filepath.Join(dir, "broken.pem")
	if err := os.WriteFile(keyFile, key.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := validConfig + "\nassertion: {enabled: true, issuer: https://auth.example.com, keyFile: " + keyFile + "}\n"
	var out bytes.Buffer
	if code := run([]string{"check-config", "--config", writeConfig(t, body)}, &out, &stderr); code != 0 ||
		!strings.Contains(out.String(), "assertion: X-Auth-Request-Jwt on every allowed check, iss https://auth.example.com, lifetime 5m0s") {
		t.Errorf("keygen's assertion key rejected: %s %s", stderr.String(), out.String())
	}
	stderr.Reset()
	body = validConfig + "\nassertion: {enabled: true, issuer: https://auth.example.com, keyFile: " + keyFile + ", previousKeyFiles: [" + broken + "]}\n"
	if code := run([]string{"check-config", "--config", writeConfig(t, body)}, &out, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "assertion.previousKeyFiles[0]: "+broken+": no PEM block") {
		t.Errorf("a broken previous key: exit %d, %s", code, stderr.String())
	}
	if code := run([]string{"keygen", "--nope"}, &out, &stderr); code != 2 {
		t.Errorf("keygen --nope: exit %d", code)
	}
}

func TestVersionAndUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if run([]string{"version"}, &out, &errOut) != 0 || !strings.HasPrefix(out.String(), "extauth ") {
		t.Errorf("version: %q", out.String())
	}
	if run([]string{"frobnicate"}, &out, &errOut) != 2 || !strings.Contains(errOut.String(), "frobnicate") {
		t.Errorf("unknown command: %q", errOut.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeStopsOnSIGTERM runs the serve command in-process, waits until it
// answers, sends the process SIGTERM, and expects a clean exit 0.
func TestServeStopsOnSIGTERM(t *testing.T) {
	idp := providertest.New(t)
	addr, metricsAddr := freePort(t), freePort(t)
	body := fmt.Sprintf(`
server: {address: %q, metricsAddress: %q, shutdownTimeout: 5s}
oidc: {issuerURL: %q, clientID: %q, clientSecret: %q}
session: {secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}
logging: {format: text}
`, addr, metricsAddr, idp.Issuer, idp.ClientID, idp.ClientSecret)
	path := writeConfig(t, body)
	var stdout bytes.Buffer
	stderr := &testenv.LockedBuffer{}
	done := make(chan int, 1)
	go func() { done <- run([]string{"serve", "--config", path}, &stdout, stderr) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never became ready: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("no shutdown log line: %s", stderr.String())
	}
}

// TestExampleConfigIsValid keeps the documented example honest.
func TestExampleConfigIsValid(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config", "--config", "../../examples/config.yaml"}, &stdout, &stderr); code != 0 {
		t.Fatalf("examples/config.yaml: %s", stderr.String())
	}
}

// TestCheckConfigSaysWhatItWillDo: the summary names the Redis in use, and
// a Redis named but switched off is a warning.
func TestCheckConfigSaysWhatItWillDo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	body := validConfig + "  redis: {address: redis.auth:6379}\n"
	if code := run([]string{"check-config", "--config", writeConfig(t, body)}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "redis: redis.auth:6379: one refresh across replicas") {
		t.Errorf("summary:\n%s", stdout.String())
	}
	stdout.Reset()
	body = validConfig + "  redis: {enabled: false, address: redis.auth:6379}\n"
	if code := run([]string{"check-config", "--config", writeConfig(t, body)}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "warning: session.redis.enabled is false") || !strings.Contains(stdout.String(), "redis: not used") {
		t.Errorf("no warning:\n%s", stdout.String())
	}
}
