package config

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/extauth/extauth/pkg/assertion"
)

// Load reads the YAML file at path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a YAML configuration onto the defaults, reads the secrets
// from the files it names into their inline keys, checks the CA bundles it
// names (ReadCA) and validates the result. Unknown or duplicate keys and
// values of the wrong type are errors naming their YAML path. On error the
// Config is nil and the error lists every problem found.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	keyErrs, err := decodeYAML(data, cfg)
	if err != nil {
		return nil, err
	}
	// Report problems with keys and files together with the validation
	// ones, so one run names every problem; validate stays quiet about a
	// secret whose file could not be read.
	p := problems(keyErrs)
	cfg.readFiles(&p)
	cfg.validate(&p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readFiles resolves every secret's "…File" key into its inline key, and
// checks the CA bundles.
func (c *Config) readFiles(p *problems) {
	c.OIDC.readFiles(p)
	c.Session.readFiles(p)
	c.Assertion.readKeys(p)
	for i := range c.Apps {
		var sub problems
		c.Apps[i].OIDC.readFiles(&sub)
		for _, err := range sub {
			*p = append(*p, fmt.Errorf("apps[%d].%s", i, err.Error()))
		}
	}
}

// readKeys checks that the assertion's key files parse (server.New reads
// them again), so that check-config names a bad one.
func (a *Assertion) readKeys(p *problems) {
	if !a.Enabled {
		return
	}
	if a.KeyFile != "" {
		if _, err := assertion.LoadKeyFile(a.KeyFile); err != nil {
			p.add("assertion.keyFile", "%v", err)
		}
	}
	for i, f := range a.PreviousKeyFiles {
		if _, err := assertion.LoadKeyFile(f); err != nil {
			p.add(fmt.Sprintf("assertion.previousKeyFiles[%d]", i), "%v", err)
		}
	}
}

func (o *OIDC) readFiles(p *problems) {
	if o.ClientSecretFile != "" {
		if o.ClientSecret != "" {
			p.add("oidc.clientSecret", "set together with oidc.clientSecretFile; use one of them")
		} else if s, err := readSecret(o.ClientSecretFile); err != nil {
			p.add("oidc.clientSecretFile", "%v", err)
		} else {
			o.ClientSecret = s
		}
	}
	// The bundle is read again at start (ReadCA in server.New); here it is
	// only checked, so that check-config names a bad one.
	if _, err := ReadCA(o.CAFile); err != nil {
		p.add("oidc.caFile", "%v", err)
	}
}

func (s *Session) readFiles(p *problems) {
	if s.SecretsFile != "" {
		if len(s.Secrets) > 0 {
			p.add("session.secrets", "set together with session.secretsFile; use one of them")
		} else if err := s.readSecretsFile(); err != nil {
			p.add("session.secretsFile", "%v", err)
		}
	}
	readInlineOrFile(p, "session.redis.password", &s.Redis.Password, s.Redis.PasswordFile)
	readInlineOrFile(p, "session.redis.sentinel.password", &s.Redis.Sentinel.Password, s.Redis.Sentinel.PasswordFile)
	if _, err := ReadCA(s.Redis.TLS.CAFile); err != nil {
		p.add("session.redis.tls.caFile", "%v", err)
	}
}

// ReadCA reads the PEM CA bundle at path (oidc.caFile,
// session.redis.tls.caFile), which must hold at least one certificate. An
// empty path names no bundle: nil, nil. Parse checks the bundles with it
// and server.New reads them with it; the error does not name the key.
func ReadCA(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pem, nil
}

// readInlineOrFile fills *value from file (the key's …File twin) when one
// is named; both at once is an error naming the key.
func readInlineOrFile(p *problems, key string, value *string, file string) {
	if file == "" {
		return
	}
	if *value != "" {
		p.add(key, "set together with %sFile; use one of them", key)
		return
	}
	v, err := readSecret(file)
	if err != nil {
		p.add(key+"File", "%v", err)
		return
	}
	*value = v
}

// readSecretsFile reads one secret a line into Secrets, remembering each
// one's line number so that Validate can point into the file.
func (s *Session) readSecretsFile() error {
	data, err := os.ReadFile(s.SecretsFile)
	if err != nil {
		return err
	}
	var secrets []string
	var lines []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		secrets = append(secrets, line)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", s.SecretsFile, err)
	}
	if len(secrets) == 0 {
		return fmt.Errorf("no secret in %s", s.SecretsFile)
	}
	s.Secrets, s.secretLines = secrets, lines
	return nil
}

// readSecret reads a secret mounted as a file. Whitespace is trimmed because
// editors and `echo` add a trailing newline.
func readSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
