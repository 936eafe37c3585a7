package charttest

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/extauth/extauth/pkg/config"
)

// TestConfigFileLoads runs extauth's own loader (what `extauth check-config`
// runs) on the config file of the rendered ConfigMap, with the secret files
// it names taken from the rendered Secret, in the places the pod mounts them.
func TestConfigFileLoads(t *testing.T) {
	for _, tc := range []struct {
		name         string
		vals         map[string]any
		clientSecret string // what config.Load must end up with
		sessionKeys  int
	}{
		{name: "defaults", vals: minimal(t), sessionKeys: 1},
		{name: "all-on", vals: allOn(t), clientSecret: "s3cr3t-client", sessionKeys: 2},
		{name: "existing secret", vals: minimal(t, "existingSecret", "mine"), clientSecret: "from-existing", sessionKeys: 1},
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

			// The secret files, as the pod sees them.
			secretData := map[string][]byte{}
			if o.Secret != nil {
				secretData = o.Secret.Data
			} else {
				// existingSecret: what the user's Secret would hold.
				secretData["client-secret"] = []byte("from-existing\n")
				secretData["session-secrets"] = []byte("# rotated 2026-01\nMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
			}
			if strings.Contains(file, "s3cr3t") || strings.Contains(file, "MDEyMzQ1Njc4") {
				t.Error("a secret is in the ConfigMap")
			}

			cfg := loadWithSecrets(t, file, secretData)
			if cfg.OIDC.ClientSecret != tc.clientSecret {
				t.Errorf("client secret %q, want %q", cfg.OIDC.ClientSecret, tc.clientSecret)
			}
			if len(cfg.Session.Keys) != tc.sessionKeys {
				t.Errorf("%d session keys, want %d", len(cfg.Session.Keys), tc.sessionKeys)
			}
			if cfg.Server.Address != ":4180" || cfg.Server.MetricsAddress != ":9090" {
				t.Errorf("addresses %q %q", cfg.Server.Address, cfg.Server.MetricsAddress)
			}
		})
	}
}

// TestConfigValuesReachTheFile: values under config end up in extauth's
// configuration as given.
func TestConfigValuesReachTheFile(t *testing.T) {
	o := render(t, allOn(t))
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth-main"].Data["config.yaml"], o.Secret.Data)
	if cfg.OIDC.IssuerURL != "https://keycloak.example.com/realms/main" || cfg.OIDC.Claims.Groups != "roles" ||
		cfg.OIDC.ExtraAuthParams["audience"] != "api://default" || cfg.Session.CookieDomain != ".example.com" ||
		cfg.Session.RefreshBefore.String() != "2m0s" || !slices.Equal(cfg.Authorization.Groups, []string{"sre", "admins"}) ||
		!cfg.Headers.AccessToken || cfg.Logging.Level != "debug" || cfg.Server.ShutdownTimeout.String() != "1m30s" {
		t.Errorf("config not as in all-on.yaml: %+v", cfg)
	}
}

// checkMounts: the …File paths in the config are where the pod mounts the
// Secret's keys, the config file is where the args say, and the Secret has
// every key the config names.
func checkMounts(t *testing.T, o *objects, cm *corev1.ConfigMap) {
	t.Helper()
	var doc struct {
		OIDC struct {
			ClientSecretFile string `json:"clientSecretFile"`
		} `json:"oidc"`
		Session struct {
			SecretsFile string `json:"secretsFile"`
		} `json:"session"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	pod := o.Deployment.Spec.Template.Spec
	c := o.container(t)
	mountOf := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mountOf[m.Name] = m
	}
	for _, v := range pod.Volumes {
		m := mountOf[v.Name]
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != cm.Name || m.SubPath != "config.yaml" || cm.Data[m.SubPath] == "" {
				t.Errorf("config volume %+v mount %+v", v, m)
			}
			if i := slices.Index(c.Args, "--config"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != m.MountPath {
				t.Errorf("args %q do not name the mounted config %s", c.Args, m.MountPath)
			}
		case v.Secret != nil:
			if doc.Session.SecretsFile != path.Join(m.MountPath, "session-secrets") {
				t.Errorf("session.secretsFile %q, mounted at %s", doc.Session.SecretsFile, m.MountPath)
			}
			if f := doc.OIDC.ClientSecretFile; f != "" && f != path.Join(m.MountPath, "client-secret") {
				t.Errorf("oidc.clientSecretFile %q, mounted at %s", f, m.MountPath)
			}
			if o.Secret != nil {
				if v.Secret.SecretName != o.Secret.Name {
					t.Errorf("secret volume mounts %s, the chart's Secret is %s", v.Secret.SecretName, o.Secret.Name)
				}
				for _, f := range []string{doc.OIDC.ClientSecretFile, doc.Session.SecretsFile} {
					if f != "" && len(o.Secret.Data[path.Base(f)]) == 0 {
						t.Errorf("the config names %s; the Secret has no key %s", f, path.Base(f))
					}
				}
			}
		default:
			t.Errorf("unexpected volume %+v", v)
		}
	}
}

// loadWithSecrets writes the secret files into a temporary directory, points
// the config's …File keys there, and loads the config with extauth's loader.
func loadWithSecrets(t *testing.T, file string, secrets map[string][]byte) *config.Config {
	t.Helper()
	dir := t.TempDir()
	for k, v := range secrets {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(file), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	for _, key := range [][2]string{{"oidc", "clientSecretFile"}, {"session", "secretsFile"}} {
		section, _ := doc[key[0]].(map[string]any)
		if f, ok := section[key[1]].(string); ok {
			section[key[1]] = filepath.Join(dir, path.Base(f))
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("extauth rejects the chart's config:\n%v\n--- config.yaml\n%s", err, file)
	}
	return cfg
}
