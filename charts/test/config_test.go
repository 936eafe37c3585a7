package charttest

import (
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
)

// TestConfigFileLoads runs extauth's own loader (what `extauth check-config`
// runs) on the config file of the rendered ConfigMap, with the files it
// names taken from the Secrets the pod mounts, in the places it mounts them.
func TestConfigFileLoads(t *testing.T) {
	for _, tc := range []struct {
		name          string
		vals          map[string]any
		clientSecret  string // what config.Load must end up with
		sessionKeys   int
		store         string            // session.store
		redisPassword string            // session.redis.password, read from its file
		sentinelPass  string            // session.redis.sentinel.password, likewise
		apps          map[string]string // each app's client secret, by name
		assertionKeys int               // the key files assertion.* names, current and previous
	}{
		{name: "defaults", vals: minimal(t), sessionKeys: 1, store: "cookie"},
		{name: "all-on", vals: allOn(t), clientSecret: "s3cr3t-client", sessionKeys: 2, store: "redis",
			redisPassword: "r3dis-pass", sentinelPass: "s3ntinel-pass", assertionKeys: 2},
		{name: "existing secret", vals: minimal(t, "existingSecret", "mine"), clientSecret: "from-existing", sessionKeys: 1, store: "cookie"},
		{name: "redis", vals: minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "redis.password", "r3dis-pass"),
			sessionKeys: 1, store: "cookie", redisPassword: "r3dis-pass"},
		{name: "redis without password", vals: minimal(t, "redis.enabled", true, "redis.address", "redis:6379"), sessionKeys: 1, store: "cookie"},
		{name: "redis session store", vals: minimal(t, "redis.enabled", true, "redis.sessionStore", true, "redis.address", "redis:6379"),
			sessionKeys: 1, store: "redis"},
		{name: "redis existing secret", vals: minimal(t, "redis.enabled", true, "redis.address", "redis:6379",
			"redis.existingSecret", "redis-creds", "redis.existingSecretPasswordKey", "password", "redis.password", "ignored"),
			sessionKeys: 1, store: "cookie", redisPassword: "from-redis-creds"},
		{name: "both existing secrets", vals: minimal(t, "existingSecret", "mine", "redis.enabled", true, "redis.tls.enabled", true,
			"redis.tls.caSecret", "redis-ca", "redis.existingSecret", "mine", "redis.sentinel.masterName", "mymaster",
			"redis.sentinel.addresses", []any{"sentinel:26379"}, "redis.sentinel.existingSecretPasswordKey", "sentinel-password"),
			clientSecret: "from-existing", sessionKeys: 1, store: "cookie", redisPassword: "from-existing-redis", sentinelPass: "from-existing-sentinel"},
		{name: "apps", vals: apps(t), sessionKeys: 1, store: "cookie",
			apps: map[string]string{"grafana": "gr4fana-s3cr3t", "argocd": "from-argocd-oidc", "wiki": "", "public": ""}},
		{name: "apps inherit the client secret", vals: apps(t, "secrets.clientSecret", "s3cr3t-top"), clientSecret: "s3cr3t-top", sessionKeys: 1, store: "cookie",
			apps: map[string]string{"grafana": "gr4fana-s3cr3t", "argocd": "from-argocd-oidc", "wiki": "s3cr3t-top", "public": ""}},
		{name: "apps with existingSecret", vals: withApp(t, apps(t, "existingSecret", "mine"), "grafana",
			"oidc", map[string]any{"clientID": "grafana", "existingSecret": "mine", "existingSecretKey": "grafana-client-secret"}),
			clientSecret: "from-existing", sessionKeys: 1, store: "cookie",
			apps: map[string]string{"grafana": "from-mine-grafana", "argocd": "from-argocd-oidc", "wiki": "from-existing", "public": ""}},
		{name: "apps without a top-level client", vals: apps(t, "config.oidc.clientID", ""), sessionKeys: 1, store: "cookie",
			apps: map[string]string{"grafana": "gr4fana-s3cr3t", "argocd": "from-argocd-oidc", "wiki": "", "public": ""}},
		{name: "assertion", vals: withAssertion(t, assertionKey(t), []string{assertionKey(t), assertionKey(t)}),
			sessionKeys: 1, store: "cookie", assertionKeys: 3},
		{name: "assertion with existingSecret", vals: minimal(t, "existingSecret", "mine", "existingSecretAssertionPreviousKeyCount", 1,
			"config.assertion", map[string]any{"enabled": true, "issuer": "https://auth.example.com"}),
			clientSecret: "from-existing", sessionKeys: 1, store: "cookie", assertionKeys: 2},
		{name: "assertion off, a key given", vals: minimal(t, "secrets.assertionKey", assertionKey(t)), sessionKeys: 1, store: "cookie"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := render(t, tc.vals)
			name := o.Deployment.Name
			cm := o.ConfigMaps[name]
			if cm == nil {
				t.Fatalf("no ConfigMap %s", name)
			}
			file := cm.Data["config.yaml"]
			checkMounts(t, o, cm)

			// No value of the chart's Secret, nor a password the values
			// give, is in the ConfigMap.
			leaks := []string{"s3cr3t", "MDEyMzQ1Njc4", "r3dis-pass", "s3ntinel-pass", "ignored", "gr4fana", "PRIVATE KEY"}
			if o.Secret != nil {
				for _, v := range o.Secret.Data {
					leaks = append(leaks, strings.TrimSpace(string(v)))
				}
			}
			for _, s := range leaks {
				if strings.Contains(file, s) {
					t.Errorf("a secret (%.3s…) is in the ConfigMap", s)
				}
			}

			cfg := loadWithSecrets(t, file, podFiles(t, o, existingSecrets(t)))
			if cfg.OIDC.ClientSecret != tc.clientSecret {
				t.Errorf("client secret %q, want %q", cfg.OIDC.ClientSecret, tc.clientSecret)
			}
			if keys, err := cfg.Session.DecodeKeys(); err != nil || len(keys) != tc.sessionKeys {
				t.Errorf("%d session keys (%v), want %d", len(keys), err, tc.sessionKeys)
			}
			if cfg.Server.Address != ":4180" || cfg.Server.MetricsAddress != ":9090" {
				t.Errorf("addresses %q %q", cfg.Server.Address, cfg.Server.MetricsAddress)
			}
			if cfg.Session.Store != tc.store {
				t.Errorf("session.store %q, want %q", cfg.Session.Store, tc.store)
			}
			r := cfg.Session.Redis
			if r.Password != tc.redisPassword || r.Sentinel.Password != tc.sentinelPass {
				t.Errorf("redis password %q, sentinel password %q; want %q, %q", r.Password, r.Sentinel.Password, tc.redisPassword, tc.sentinelPass)
			}
			got := map[string]string{}
			for _, a := range cfg.Apps {
				got[a.Name] = a.OIDC.ClientSecret
			}
			if !maps.Equal(got, tc.apps) {
				t.Errorf("apps' client secrets %q, want %q", got, tc.apps)
			}
			a := cfg.Assertion
			keyFiles := slices.DeleteFunc(append([]string{a.KeyFile}, a.PreviousKeyFiles...), func(f string) bool { return f == "" })
			if len(keyFiles) != tc.assertionKeys || a.Enabled != (tc.assertionKeys > 0) {
				t.Errorf("assertion enabled %v with key files %q, want %d", a.Enabled, keyFiles, tc.assertionKeys)
			}
			for _, f := range keyFiles {
				if _, err := assertion.LoadKeyFile(f); err != nil {
					t.Errorf("assertion key: %v", err)
				}
			}
		})
	}
}

// TestConfigValuesReachTheFile: values under config and redis end up in
// extauth's configuration as given.
func TestConfigValuesReachTheFile(t *testing.T) {
	o := render(t, allOn(t))
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth-main"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	if cfg.OIDC.IssuerURL != "https://keycloak.example.com/realms/main" || cfg.OIDC.Claims.Groups != "roles" ||
		cfg.OIDC.ExtraAuthParams["audience"] != "api://default" || cfg.Session.CookieDomain != ".example.com" ||
		cfg.Session.RefreshBefore.String() != "2m0s" || !slices.Equal(cfg.Authorization.Groups, []string{"sre", "admins"}) ||
		!cfg.Headers.AccessToken || cfg.Logging.Level != "debug" || cfg.Server.ShutdownTimeout.String() != "1m30s" {
		t.Errorf("config not as in all-on.yaml: %+v", cfg)
	}
	r := cfg.Session.Redis
	if !cfg.Session.RedisUsed() || !r.Enabled || cfg.Session.Store != config.StoreRedis || r.DB != 2 || r.KeyPrefix != "extauth-main:" ||
		r.Username != "extauth" || !r.TLS.Enabled || r.TLS.ServerName != "redis.example.com" || r.TLS.InsecureSkipVerify ||
		len(readCA(t, r.TLS.CAFile)) == 0 || r.Sentinel.MasterName != "mymaster" || !slices.Equal(r.Sentinel.Addresses, []string{
		"redis-node-0.redis-headless.redis.svc.cluster.local:26379", "redis-node-1.redis-headless.redis.svc.cluster.local:26379"}) {
		t.Errorf("session.redis not as in all-on.yaml: %+v", r)
	}
}

// configDoc is the part of the rendered config file that names mounted files.
type configDoc struct {
	OIDC struct {
		ClientSecretFile string `json:"clientSecretFile"`
	} `json:"oidc"`
	Assertion struct {
		KeyFile          string   `json:"keyFile"`
		PreviousKeyFiles []string `json:"previousKeyFiles"`
	} `json:"assertion"`
	// Apps' oidc as rendered: every key, so that a test sees what the
	// chart removed.
	Apps []struct {
		Name string         `json:"name"`
		OIDC map[string]any `json:"oidc"`
	} `json:"apps"`
	Session struct {
		SecretsFile string `json:"secretsFile"`
		Store       string `json:"store"`
		Redis       *struct {
			Enabled      bool   `json:"enabled"`
			Address      string `json:"address"`
			PasswordFile string `json:"passwordFile"`
			TLS          struct {
				CAFile string `json:"caFile"`
			} `json:"tls"`
			Sentinel struct {
				PasswordFile string `json:"passwordFile"`
			} `json:"sentinel"`
		} `json:"redis"`
	} `json:"session"`
}

func parseConfigDoc(t *testing.T, cm *corev1.ConfigMap) configDoc {
	t.Helper()
	var doc configDoc
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return doc
}

// checkMounts: the …File paths in the config are where the pod mounts the
// Secrets' keys, the config file is where the args say, and the chart's
// Secret has every key the config names under its mount.
func checkMounts(t *testing.T, o *objects, cm *corev1.ConfigMap) {
	t.Helper()
	doc := parseConfigDoc(t, cm)
	var redisFiles []string
	if r := doc.Session.Redis; r != nil {
		redisFiles = []string{r.PasswordFile, r.Sentinel.PasswordFile}
	}
	appFiles := map[string]string{} // app name → its oidc.clientSecretFile
	for _, a := range doc.Apps {
		if f, _ := a.OIDC["clientSecretFile"].(string); f != "" {
			appFiles[a.Name] = f
		}
	}
	pod := o.Deployment.Spec.Template.Spec
	c := o.container(t)
	mountOf := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mountOf[m.Name] = m
	}
	for _, v := range pod.Volumes {
		m, ok := mountOf[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != cm.Name || m.SubPath != "config.yaml" || cm.Data[m.SubPath] == "" {
				t.Errorf("config volume %+v mount %+v", v, m)
			}
			if i := slices.Index(c.Args, "--config"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != m.MountPath {
				t.Errorf("args %q do not name the mounted config %s", c.Args, m.MountPath)
			}
		case v.Secret != nil && v.Name == "secrets":
			if doc.Session.SecretsFile != path.Join(m.MountPath, "session-secrets") {
				t.Errorf("session.secretsFile %q, mounted at %s", doc.Session.SecretsFile, m.MountPath)
			}
			if f := doc.OIDC.ClientSecretFile; f != "" && f != path.Join(m.MountPath, "client-secret") {
				t.Errorf("oidc.clientSecretFile %q, mounted at %s", f, m.MountPath)
			}
			for _, f := range append([]string{doc.Assertion.KeyFile}, doc.Assertion.PreviousKeyFiles...) {
				if f != "" && path.Dir(f) != m.MountPath {
					t.Errorf("assertion key file %q, not under the Secret's mount %s", f, m.MountPath)
				}
			}
			if o.Secret != nil {
				if v.Secret.SecretName != o.Secret.Name {
					t.Errorf("secret volume mounts %s, the chart's Secret is %s", v.Secret.SecretName, o.Secret.Name)
				}
				files := append([]string{doc.OIDC.ClientSecretFile, doc.Session.SecretsFile, doc.Assertion.KeyFile}, redisFiles...)
				files = append(files, doc.Assertion.PreviousKeyFiles...)
				for _, f := range appFiles {
					files = append(files, f)
				}
				for _, f := range files {
					if path.Dir(f) == m.MountPath && len(o.Secret.Data[path.Base(f)]) == 0 {
						t.Errorf("the config names %s; the Secret has no key %s", f, path.Base(f))
					}
				}
			}
		case v.Secret != nil && v.Name == "redis-secret":
			if r := doc.Session.Redis; r == nil || r.PasswordFile != path.Join(m.MountPath, "redis-password") {
				t.Errorf("session.redis %+v, redis.existingSecret mounted at %s", r, m.MountPath)
			}
		case v.Secret != nil && v.Name == "redis-ca":
			if r := doc.Session.Redis; r == nil || r.TLS.CAFile != path.Join(m.MountPath, "ca.crt") {
				t.Errorf("session.redis %+v, redis.tls.caSecret mounted at %s", r, m.MountPath)
			}
		case v.Secret != nil && strings.HasPrefix(v.Name, "app-") && strings.HasSuffix(v.Name, "-secret"):
			app := strings.TrimSuffix(strings.TrimPrefix(v.Name, "app-"), "-secret")
			if f := appFiles[app]; f != path.Join(m.MountPath, "client-secret") || len(v.Secret.Items) != 1 {
				t.Errorf("apps[%s].oidc.clientSecretFile %q, its existingSecret mounted at %s with items %+v", app, f, m.MountPath, v.Secret.Items)
			}
		default:
			t.Errorf("unexpected volume %+v", v)
		}
	}
}

// existingSecrets stand in for the Secrets the tests' values name but the
// chart does not render, by name.
func existingSecrets(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	return map[string]map[string][]byte{
		"mine": {
			"client-secret":         []byte("from-existing\n"),
			"session-secrets":       []byte("# rotated 2026-01\nMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"),
			"redis-password":        []byte("from-existing-redis\n"),
			"sentinel-password":     []byte("from-existing-sentinel"),
			"grafana-client-secret": []byte("from-mine-grafana\n"),
			// Real keys: extauth parses them.
			"assertion-key":            []byte(assertionKey(t)),
			"assertion-previous-key-0": []byte(assertionKey(t)),
		},
		"my-secret":   {"client-secret": []byte("x"), "session-secrets": []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")},
		"redis-creds": {"password": []byte("from-redis-creds\n"), "redis-password": []byte("default-key")},
		"redis-ca":    {"ca.crt": testenv.SelfSignedCAPEM(t, "test redis CA"), "tls.crt": []byte("not read")},
		"argocd-oidc": {"client_secret": []byte("from-argocd-oidc\n"), "client-secret": []byte("default-key")},
	}
}

// podFiles are the files the pod sees from its Secret volumes, by path: the
// chart's Secret's keys, or those of a stand-in from existing for a Secret
// the chart does not render, renamed by the volume's items. An item whose
// key the Secret lacks keeps a real pod from starting: an error here.
func podFiles(t *testing.T, o *objects, existing map[string]map[string][]byte) map[string][]byte {
	t.Helper()
	mountOf := map[string]corev1.VolumeMount{}
	for _, m := range o.container(t).VolumeMounts {
		mountOf[m.Name] = m
	}
	files := map[string][]byte{}
	for _, v := range o.Deployment.Spec.Template.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		m, ok := mountOf[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		var data map[string][]byte
		if o.Secret != nil && v.Secret.SecretName == o.Secret.Name {
			data = o.Secret.Data
		} else if data = existing[v.Secret.SecretName]; data == nil {
			t.Fatalf("volume %s mounts the Secret %s, which the test has no stand-in for", v.Name, v.Secret.SecretName)
		}
		if len(v.Secret.Items) == 0 {
			for k, b := range data {
				files[path.Join(m.MountPath, k)] = b
			}
			continue
		}
		for _, it := range v.Secret.Items {
			b, ok := data[it.Key]
			if !ok {
				t.Errorf("volume %s: the Secret %s has no key %s: the pod would not start", v.Name, v.Secret.SecretName, it.Key)
				continue
			}
			files[path.Join(m.MountPath, it.Path)] = b
		}
	}
	return files
}

// loadWithSecrets writes the pod's files under a temporary directory,
// points every …File key of the config there, and loads the config with
// extauth's loader: a key naming a file the pod would not have fails.
func loadWithSecrets(t *testing.T, file string, files map[string][]byte) *config.Config {
	t.Helper()
	root := t.TempDir()
	for p, v := range files {
		dst := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(file), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	var rebase func(m map[string]any)
	rebase = func(m map[string]any) {
		for k, v := range m {
			switch v := v.(type) {
			case map[string]any:
				rebase(v)
			case []any: // apps, and lists of files (assertion.previousKeyFiles)
				for i, item := range v {
					switch item := item.(type) {
					case map[string]any:
						rebase(item)
					case string:
						if strings.HasSuffix(k, "Files") && item != "" {
							v[i] = filepath.Join(root, filepath.FromSlash(item))
						}
					}
				}
			case string:
				if strings.HasSuffix(k, "File") && v != "" {
					m[k] = filepath.Join(root, filepath.FromSlash(v))
				}
			}
		}
	}
	rebase(doc)
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(root, "config.yaml")
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("extauth rejects the chart's config:\n%v\n--- config.yaml\n%s", err, file)
	}
	return cfg
}

// readCA is what extauth reads from a loaded config's CA file at start.
func readCA(t *testing.T, path string) []byte {
	t.Helper()
	pem, err := config.ReadCA(path)
	if err != nil {
		t.Fatal(err)
	}
	return pem
}
