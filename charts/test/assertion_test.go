package charttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"

	"github.com/extauth/extauth/pkg/assertion"
)

// assertionKey is a new signing key, PEM, as `extauth keygen --assertion`
// prints it.
func assertionKey(t *testing.T) string {
	t.Helper()
	k, err := assertion.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return string(k)
}

// keyID is the kid extauth gives a PEM key.
func keyID(t *testing.T, pemKey []byte) string {
	t.Helper()
	k, err := assertion.ParseKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return k.KeyID()
}

// withAssertion: minimal values with config.assertion on, signing with key
// and publishing previous too, then overrides.
func withAssertion(t *testing.T, key string, previous []string, overrides ...any) map[string]any {
	t.Helper()
	prev := []any{}
	for _, p := range previous {
		prev = append(prev, p)
	}
	return minimal(t, append([]any{
		"config.assertion", map[string]any{"enabled": true, "issuer": "https://auth.example.com", "lifetime": "2m"},
		"secrets.assertionKey", key, "secrets.assertionPreviousKeys", prev,
	}, overrides...)...)
}

// configMap is a map of the rendered config file, to see which keys are
// there at all.
func configMap(t *testing.T, o *objects) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(o.ConfigMaps[o.Deployment.Name].Data["config.yaml"]), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return doc
}

// TestAssertion: the assertion's keys go into the chart's Secret, never the
// ConfigMap; the config names them where the pod mounts them, current key
// first; the rest of config.assertion reaches extauth as given, and
// extauth's loader parses every key from its file.
func TestAssertion(t *testing.T) {
	cur, old0, old1 := assertionKey(t), assertionKey(t), assertionKey(t)
	o := render(t, withAssertion(t, cur, []string{old0, old1}, "config.assertion.header", "X-Identity"))
	cm := o.ConfigMaps["extauth"]
	file := cm.Data["config.yaml"]
	for _, k := range []string{cur, old0, old1} {
		for _, s := range []string{strings.Split(k, "\n")[1], base64.StdEncoding.EncodeToString([]byte(k))[:40]} {
			if strings.Contains(file, s) {
				t.Errorf("a key (%.12s…) is in the ConfigMap:\n%s", s, file)
			}
		}
	}
	if strings.Contains(file, "PRIVATE KEY") {
		t.Errorf("PEM in the ConfigMap:\n%s", file)
	}

	doc := parseConfigDoc(t, cm)
	wantPrevious := []string{"/etc/extauth/secrets/assertion-previous-key-0", "/etc/extauth/secrets/assertion-previous-key-1"}
	if doc.Assertion.KeyFile != "/etc/extauth/secrets/assertion-key" || !slices.Equal(doc.Assertion.PreviousKeyFiles, wantPrevious) {
		t.Errorf("assertion.keyFile %q, previousKeyFiles %q; want /etc/extauth/secrets/assertion-key and %q",
			doc.Assertion.KeyFile, doc.Assertion.PreviousKeyFiles, wantPrevious)
	}

	var keys []string
	for k := range o.Secret.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"assertion-key", "assertion-previous-key-0", "assertion-previous-key-1", "session-secrets"}) {
		t.Errorf("the Secret's keys %v", keys)
	}
	for key, want := range map[string]string{"assertion-key": cur, "assertion-previous-key-0": old0, "assertion-previous-key-1": old1} {
		if got := string(o.Secret.Data[key]); got != want {
			t.Errorf("the Secret's %s is not the key given:\n%s", key, got)
		}
	}
	// The keys come with the Secret the pod mounts anyway: no volume of their own.
	if got := volumeNames(o); !slices.Equal(got, []string{"config", "secrets"}) {
		t.Errorf("volumes %v, want config and secrets", got)
	}
	checkMounts(t, o, cm)

	cfg := loadWithSecrets(t, file, podFiles(t, o, existingSecrets(t)))
	a := cfg.Assertion
	if !a.Enabled || a.Header != "X-Identity" || a.Issuer != "https://auth.example.com" || a.Lifetime.Duration != 2*time.Minute {
		t.Errorf("assertion not as given: %+v", a)
	}
	var got []string
	for _, f := range append([]string{a.KeyFile}, a.PreviousKeyFiles...) {
		k, err := assertion.LoadKeyFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k.KeyID())
	}
	if want := []string{keyID(t, []byte(cur)), keyID(t, []byte(old0)), keyID(t, []byte(old1))}; !slices.Equal(got, want) {
		t.Errorf("extauth signs with and publishes the keys %q, want %q (the current one first)", got, want)
	}

	// No previous keys, or null (how `--set …=null` removes them): no
	// previousKeyFiles at all.
	for _, prev := range []any{[]any{}, nil} {
		o := render(t, withAssertion(t, cur, nil, "secrets.assertionPreviousKeys", prev))
		a, _ := configMap(t, o)["assertion"].(map[string]any)
		if _, ok := a["previousKeyFiles"]; ok || a["keyFile"] != "/etc/extauth/secrets/assertion-key" {
			t.Errorf("previous keys %v: assertion %v", prev, a)
		}
		if _, ok := o.Secret.Data["assertion-previous-key-0"]; ok {
			t.Errorf("previous keys %v: the Secret has assertion-previous-key-0", prev)
		}
		loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	}
}

// TestAssertionExistingSecret: with existingSecret the keys are the user's
// Secret's assertion-key and existingSecretAssertionPreviousKeyCount
// assertion-previous-key-N, mounted with the rest of it.
func TestAssertionExistingSecret(t *testing.T) {
	existing := existingSecrets(t)
	on := map[string]any{"enabled": true, "issuer": "https://auth.example.com"}
	o := render(t, minimal(t, "existingSecret", "mine", "existingSecretAssertionPreviousKeyCount", 1, "config.assertion", on))
	if o.Secret != nil {
		t.Error("the chart renders a Secret though existingSecret is set")
	}
	cm := o.ConfigMaps["extauth"]
	doc := parseConfigDoc(t, cm)
	if doc.Assertion.KeyFile != "/etc/extauth/secrets/assertion-key" ||
		!slices.Equal(doc.Assertion.PreviousKeyFiles, []string{"/etc/extauth/secrets/assertion-previous-key-0"}) {
		t.Errorf("assertion.keyFile %q, previousKeyFiles %q", doc.Assertion.KeyFile, doc.Assertion.PreviousKeyFiles)
	}
	checkMounts(t, o, cm)
	cfg := loadWithSecrets(t, cm.Data["config.yaml"], podFiles(t, o, existing))
	var got []string
	for _, f := range append([]string{cfg.Assertion.KeyFile}, cfg.Assertion.PreviousKeyFiles...) {
		k, err := assertion.LoadKeyFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k.KeyID())
	}
	mine := existing["mine"]
	if want := []string{keyID(t, mine["assertion-key"]), keyID(t, mine["assertion-previous-key-0"])}; !slices.Equal(got, want) {
		t.Errorf("keys %q, want those of the Secret mine %q", got, want)
	}

	// Without the count: the signing key alone.
	o = render(t, minimal(t, "existingSecret", "mine", "config.assertion", on))
	a, _ := configMap(t, o)["assertion"].(map[string]any)
	if _, ok := a["previousKeyFiles"]; ok || a["keyFile"] != "/etc/extauth/secrets/assertion-key" {
		t.Errorf("assertion %v, want keyFile only", a)
	}
}

// TestAssertionOff: while config.assertion.enabled is false nothing of the
// keys is rendered, a key given or not, and config.assertion passes
// through as given.
func TestAssertionOff(t *testing.T) {
	base := render(t, minimal(t))
	for name, vals := range map[string]map[string]any{
		"defaults":     minimal(t),
		"a key staged": minimal(t, "secrets.assertionKey", assertionKey(t), "secrets.assertionPreviousKeys", []any{assertionKey(t)}),
		"a key and enabled: false": minimal(t, "secrets.assertionKey", assertionKey(t),
			"config.assertion", map[string]any{"enabled": false, "issuer": "https://auth.example.com"}),
	} {
		t.Run(name, func(t *testing.T) {
			o := render(t, vals)
			for k := range o.Secret.Data {
				if strings.HasPrefix(k, "assertion") {
					t.Errorf("the Secret has %s with assertion off", k)
				}
			}
			a, present := configMap(t, o)["assertion"].(map[string]any)
			if _, ok := a["keyFile"]; ok || present != (name == "a key and enabled: false") {
				t.Errorf("assertion section %v (present %v)", a, present)
			}
			if o.Deployment.Spec.Template.Annotations["checksum/secret"] != base.Deployment.Spec.Template.Annotations["checksum/secret"] {
				t.Error("checksum/secret changed with assertion off")
			}
			if strings.Contains(o.Notes, "jwks") || strings.Contains(o.Notes, "Jwt") {
				t.Errorf("NOTES mention the assertion while it is off:\n%s", o.Notes)
			}
			cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
			if cfg.Assertion.Enabled || cfg.Assertion.KeyFile != "" {
				t.Errorf("assertion %+v", cfg.Assertion)
			}
		})
	}
}

// otherPEM is a PEM block of another kind than a private key.
func otherPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// TestAssertionFailures: keys in the config, assertion on without a key
// (none is generated) or an issuer, and keys that cannot work stop the
// render with a message naming the value.
func TestAssertionFailures(t *testing.T) {
	k1, k2 := assertionKey(t), assertionKey(t)
	on := map[string]any{"enabled": true, "issuer": "https://auth.example.com"}
	for _, tc := range []struct {
		name string
		vals map[string]any
		want []string
	}{
		{"keyFile", withAssertion(t, k1, nil, "config.assertion.keyFile", "/secrets/assertion.pem"),
			[]string{"config.assertion.keyFile: the assertion keys are secrets: give them as secrets.assertionKey"}},
		{"keyFile while off", minimal(t, "config.assertion", map[string]any{"keyFile": "/secrets/assertion.pem"}),
			[]string{"config.assertion.keyFile: the assertion keys are secrets"}},
		{"previousKeyFiles", withAssertion(t, k1, nil, "config.assertion.previousKeyFiles", []any{"/secrets/old.pem"}),
			[]string{"config.assertion.previousKeyFiles: the assertion keys are secrets", "secrets.assertionPreviousKeys"}},
		{"no key", minimal(t, "config.assertion", on),
			[]string{"config.assertion.enabled: no signing key. Run `extauth keygen --assertion` and set secrets.assertionKey", "does not generate one"}},
		{"previous keys only", minimal(t, "config.assertion", on, "secrets.assertionPreviousKeys", []any{k1}),
			[]string{"config.assertion.enabled: no signing key", "extauth keygen --assertion"}},
		{"no issuer", withAssertion(t, k1, nil, "config.assertion.issuer", ""),
			[]string{"config.assertion.issuer is required with config.assertion.enabled"}},
		{"no issuer, no key", minimal(t, "config.assertion", map[string]any{"enabled": true}), []string{"config.assertion."}},
		{"key with existingSecret", withAssertion(t, k1, nil, "existingSecret", "mine"),
			[]string{"secrets.assertionKey/assertionPreviousKeys: with existingSecret the chart creates no Secret", "Secret mine as the keys assertion-key"}},
		{"previous key with existingSecret", minimal(t, "existingSecret", "mine", "config.assertion", on, "secrets.assertionPreviousKeys", []any{k1}),
			[]string{"with existingSecret the chart creates no Secret"}},
		{"count without existingSecret", withAssertion(t, k1, nil, "existingSecretAssertionPreviousKeyCount", 1),
			[]string{"existingSecretAssertionPreviousKeyCount: only with existingSecret"}},
		{"base64 of the key", withAssertion(t, base64.StdEncoding.EncodeToString([]byte(k1)), nil),
			[]string{"secrets.assertionKey: not one PEM private key"}},
		{"a public key", withAssertion(t, otherPEM(t), nil), []string{"secrets.assertionKey: not one PEM private key"}},
		{"two keys in one", withAssertion(t, k1, []string{k2 + k2}), []string{"secrets.assertionPreviousKeys[0]: not one PEM private key"}},
		{"the current key as a previous one", withAssertion(t, k1, []string{k2, k1}),
			[]string{"secrets.assertionPreviousKeys[1]: the same key as secrets.assertionKey"}},
		{"a previous key twice", withAssertion(t, k1, []string{k2, strings.TrimSpace(k2)}),
			[]string{"secrets.assertionPreviousKeys[1]: the same key as secrets.assertionPreviousKeys[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir, tc.vals)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("render error %v, want one saying %q", err, want)
				}
			}
			// No message quotes a key.
			if err != nil && strings.Contains(err.Error(), strings.Split(k1, "\n")[1]) {
				t.Errorf("the error quotes a key: %v", err)
			}
		})
	}
}

// TestAssertionChecksums: a change of the keys rolls the pods through
// checksum/secret, of the key files named through checksum/config too;
// the same keys render the same checksums every time.
func TestAssertionChecksums(t *testing.T) {
	annotations := checksums
	k1, k2 := assertionKey(t), assertionKey(t)
	on := map[string]any{"enabled": true, "issuer": "https://auth.example.com"}
	without := annotations(t, minimal(t))
	base := annotations(t, withAssertion(t, k1, nil))
	existing := annotations(t, minimal(t, "existingSecret", "mine", "config.assertion", on))
	for _, tc := range []struct {
		name           string
		base           map[string]string
		vals           map[string]any
		config, secret bool // changed?
	}{
		{name: "assertion on", base: without, vals: withAssertion(t, k1, nil), config: true, secret: true},
		{name: "the same key again", base: base, vals: withAssertion(t, k1, nil)},
		{name: "another key", base: base, vals: withAssertion(t, k2, nil), secret: true},
		{name: "a rotation", base: base, vals: withAssertion(t, k2, []string{k1}), config: true, secret: true},
		{name: "lifetime", base: base, vals: withAssertion(t, k1, nil, "config.assertion.lifetime", "10m"), config: true},
		{name: "header", base: base, vals: withAssertion(t, k1, nil, "config.assertion.header", "X-Identity"), config: true},
		{name: "a key while off", base: without, vals: minimal(t, "secrets.assertionKey", k1)},
		{name: "existingSecret previous keys", base: existing,
			vals: minimal(t, "existingSecret", "mine", "config.assertion", on, "existingSecretAssertionPreviousKeyCount", 2), config: true, secret: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := annotations(t, tc.vals)
			if changed := got["checksum/config"] != tc.base["checksum/config"]; changed != tc.config {
				t.Errorf("checksum/config changed = %v, want %v", changed, tc.config)
			}
			if changed := got["checksum/secret"] != tc.base["checksum/secret"]; changed != tc.secret {
				t.Errorf("checksum/secret changed = %v, want %v", changed, tc.secret)
			}
		})
	}
	// The rendered Secret too: the same keys, the same data.
	a, b := render(t, withAssertion(t, k1, []string{k2})), render(t, withAssertion(t, k1, []string{k2}))
	for _, k := range []string{"assertion-key", "assertion-previous-key-0"} {
		if string(a.Secret.Data[k]) != string(b.Secret.Data[k]) || len(a.Secret.Data[k]) == 0 {
			t.Errorf("%s differs between two renders of the same values", k)
		}
	}
}

// TestAssertionNotes: with the assertion on, NOTES give the JWKS URL apps
// verify against, and the header, in the ingress-nginx annotation too.
func TestAssertionNotes(t *testing.T) {
	notes := render(t, withAssertion(t, assertionKey(t), []string{assertionKey(t)})).Notes
	for _, s := range []string{
		"\n    http://extauth.auth.svc.cluster.local:4180/.well-known/jwks.json\n",
		"/oauth2/jwks",
		"carries the header\nX-Auth-Request-Jwt,",
		"iss https://auth.example.com",
		"valid 2m",
		"secrets.assertionPreviousKeys",
	} {
		if !strings.Contains(notes, s) {
			t.Errorf("NOTES lack %q:\n%s", s, notes)
		}
	}
	if got, _ := notesAnnotation(notes, "nginx.ingress.kubernetes.io/auth-response-headers"); !strings.HasSuffix(got, ",X-Auth-Request-Jwt") {
		t.Errorf("auth-response-headers %q lack the assertion's header", got)
	}

	// all-on: another name, namespace domain and header.
	notes = render(t, allOn(t)).Notes
	for _, s := range []string{"http://extauth-main.auth.svc.cluster.example:4180/.well-known/jwks.json", "carries the header\nX-Auth-Request-Assertion,"} {
		if !strings.Contains(notes, s) {
			t.Errorf("all-on NOTES lack %q:\n%s", s, notes)
		}
	}
	if got, _ := notesAnnotation(notes, "nginx.ingress.kubernetes.io/auth-response-headers"); !strings.HasSuffix(got, ",X-Auth-Request-Assertion") {
		t.Errorf("all-on auth-response-headers %q", got)
	}

	// existingSecret: which keys of the user's Secret.
	notes = render(t, minimal(t, "existingSecret", "mine", "existingSecretAssertionPreviousKeyCount", 2,
		"config.assertion", map[string]any{"enabled": true, "issuer": "https://auth.example.com"})).Notes
	if !strings.Contains(notes, "Signing key: assertion-key of the Secret mine; published too: assertion-previous-key-0, assertion-previous-key-1.") ||
		!strings.Contains(notes, "rollout restart deployment/extauth") {
		t.Errorf("existingSecret NOTES:\n%s", notes)
	}
}

// TestAssertionReadmeExample: the values of the chart README's assertion
// section, with a key as --set-file gives it, render, and extauth accepts
// the config they make.
func TestAssertionReadmeExample(t *testing.T) {
	section, block := readmeSection(t, "Signed identity (assertion)")
	for _, s := range []string{"extauth keygen --assertion", "--set-file secrets.assertionKey=", "secrets.assertionPreviousKeys",
		"existingSecretAssertionPreviousKeyCount", "/.well-known/jwks.json", "config.assertion.lifetime"} {
		if !strings.Contains(section, s) {
			t.Errorf("the README's assertion section does not mention %s", s)
		}
	}
	var example map[string]any
	if err := yaml.Unmarshal([]byte(block), &example); err != nil {
		t.Fatalf("README.md assertion example: %v", err)
	}
	key := assertionKey(t)
	vals := chartutil.CoalesceTables(example, minimal(t, "secrets.assertionKey", key))
	o := render(t, vals)
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	if a := cfg.Assertion; !a.Enabled || a.Issuer != "https://auth.example.com" || a.Header != "X-Auth-Request-Jwt" || a.Lifetime.Duration != 5*time.Minute {
		t.Errorf("README example: assertion %+v", a)
	}
	if k, err := assertion.LoadKeyFile(cfg.Assertion.KeyFile); err != nil || k.KeyID() != keyID(t, []byte(key)) {
		t.Errorf("README example: signing key %v", err)
	}
}
