package charttest

import (
	"encoding/base64"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// apps: minimal.yaml and apps.yaml (four apps, one of each kind of client
// secret), then overrides.
func apps(t *testing.T, overrides ...any) map[string]any {
	t.Helper()
	return values(t, []string{"minimal.yaml", "apps.yaml"}, overrides...)
}

// withApp sets keys of the app named name in v's config.apps, each a dotted
// path below the app and its value, and returns v. values reads its files
// anew on every call, so no other test's tree changes.
func withApp(t *testing.T, v map[string]any, name string, overrides ...any) map[string]any {
	t.Helper()
	if len(overrides)%2 != 0 {
		t.Fatal("overrides come in path, value pairs")
	}
	cfg, _ := v["config"].(map[string]any)
	list, _ := cfg["apps"].([]any)
	for _, item := range list {
		if app, _ := item.(map[string]any); app != nil && app["name"] == name {
			for i := 0; i < len(overrides); i += 2 {
				setPath(app, overrides[i].(string), overrides[i+1])
			}
			return v
		}
	}
	t.Fatalf("no app %s in config.apps", name)
	return nil
}

// TestApps: apps with client secrets of their own never put one in the
// ConfigMap: the inline one goes into the chart's Secret, the user's Secret
// is mounted in a volume of the app's own, and the config names both files;
// the chart's own keys (existingSecret, existingSecretKey) are gone, and
// everything else of the apps reaches extauth as given.
func TestApps(t *testing.T) {
	o := render(t, apps(t))
	cm := o.ConfigMaps["extauth"]
	file := cm.Data["config.yaml"]
	for _, s := range []string{"gr4fana-s3cr3t", base64.StdEncoding.EncodeToString([]byte("gr4fana-s3cr3t")),
		"existingSecret", "existingSecretKey", "argocd-oidc", "client_secret"} {
		if strings.Contains(file, s) {
			t.Errorf("config.yaml has %q:\n%s", s, file)
		}
	}
	got := map[string]map[string]any{}
	for _, a := range parseConfigDoc(t, cm).Apps {
		got[a.Name] = a.OIDC
	}
	want := map[string]map[string]any{
		"grafana": {"clientID": "grafana", "clientSecretFile": "/etc/extauth/secrets/app-grafana-client-secret",
			"scopes": []any{"openid", "email", "groups"}},
		"argocd": {"clientID": "argocd", "clientSecretFile": "/etc/extauth/apps/argocd/client-secret"},
		// Inherits the top level's secret, if any: no file of its own.
		"wiki": {"clientID": "wiki"},
		// "" is no secret: it stays, so that extauth drops the inherited one.
		"public": {"clientID": "public", "clientSecret": "", "pkce": true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("apps' oidc in config.yaml:\n%v\nwant\n%v", got, want)
	}

	var keys []string
	for k := range o.Secret.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"app-grafana-client-secret", "session-secrets"}) {
		t.Errorf("the Secret's keys %v, want app-grafana-client-secret and session-secrets", keys)
	}
	if s := string(o.Secret.Data["app-grafana-client-secret"]); s != "gr4fana-s3cr3t" {
		t.Errorf("app-grafana-client-secret = %q", s)
	}

	if got := volumeNames(o); !slices.Equal(got, []string{"config", "secrets", "app-argocd-secret"}) {
		t.Errorf("volumes %v, want config, secrets and app-argocd-secret", got)
	}
	v := volume(t, o, "app-argocd-secret")
	if v.Secret == nil || v.Secret.SecretName != "argocd-oidc" || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 ||
		!reflect.DeepEqual(v.Secret.Items, []corev1.KeyToPath{{Key: "client_secret", Path: "client-secret"}}) {
		t.Errorf("argocd's volume %+v, want key client_secret of Secret argocd-oidc as client-secret", v.Secret)
	}
	var mount *corev1.VolumeMount
	for _, m := range o.container(t).VolumeMounts {
		if m.Name == "app-argocd-secret" {
			mount = &m
		}
	}
	if mount == nil || mount.MountPath != "/etc/extauth/apps/argocd" || !mount.ReadOnly || mount.SubPath != "" {
		t.Errorf("argocd's mount %+v, want /etc/extauth/apps/argocd, read-only", mount)
	}
	checkMounts(t, o, cm)

	cfg := loadWithSecrets(t, file, podFiles(t, o, existingSecrets(t)))
	if len(cfg.Apps) != 4 {
		t.Fatalf("%d apps, want 4", len(cfg.Apps))
	}
	g, pub := cfg.Apps[0], cfg.Apps[3]
	if g.Name != "grafana" || !slices.Equal(g.Hosts, []string{"grafana.example.com", "*.grafana.example.com"}) ||
		g.Session.CookieName != "_extauth_grafana" || !slices.Equal(g.Authorization.Groups, []string{"sre"}) ||
		g.OIDC.IssuerURL != cfg.OIDC.IssuerURL {
		t.Errorf("grafana not as in apps.yaml (issuer inherited): %+v", g)
	}
	if pub.Name != "public" || pub.Authorization.Preflight != "allow" || len(pub.Authorization.Skip) != 1 ||
		pub.Authorization.Skip[0].Path != "/healthz" {
		t.Errorf("public not as in apps.yaml: %+v", pub)
	}
}

// TestAppChecksums: an app's inline secret, and the Secret and key an app
// names, roll the pods through checksum/secret; other app values through
// checksum/config only.
func TestAppChecksums(t *testing.T) {
	annotations := func(v map[string]any) map[string]string { return checksums(t, v) }
	withApps := annotations(apps(t))
	without := annotations(minimal(t))
	for _, tc := range []struct {
		name           string
		base           map[string]string
		vals           map[string]any
		config, secret bool // changed?
	}{
		{name: "apps", base: without, vals: apps(t), config: true, secret: true},
		// Apps without secrets of their own leave checksum/secret as it was.
		{name: "an app inheriting the secret", base: without, config: true,
			vals: minimal(t, "config.apps", []any{map[string]any{"name": "wiki", "hosts": []any{"wiki.example.com"}, "oidc": map[string]any{"clientID": "wiki"}}})},
		{name: "inline secret", base: withApps, vals: withApp(t, apps(t), "grafana", "oidc.clientSecret", "n3w-s3cr3t"), secret: true},
		{name: "existingSecret", base: withApps, vals: withApp(t, apps(t), "argocd", "oidc.existingSecret", "argocd-oidc-v2"), secret: true},
		{name: "existingSecretKey", base: withApps, vals: withApp(t, apps(t), "argocd", "oidc.existingSecretKey", "secret"), secret: true},
		{name: "a public app gets a secret", base: withApps, vals: withApp(t, apps(t), "public", "oidc.clientSecret", "x"), config: true, secret: true},
		{name: "cookie", base: withApps, vals: withApp(t, apps(t), "grafana", "session.cookieName", "_grafana"), config: true},
		{name: "hosts", base: withApps, vals: withApp(t, apps(t), "wiki", "hosts", []any{"docs.example.com"}), config: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := annotations(tc.vals)
			if changed := got["checksum/config"] != tc.base["checksum/config"]; changed != tc.config {
				t.Errorf("checksum/config changed = %v, want %v", changed, tc.config)
			}
			if changed := got["checksum/secret"] != tc.base["checksum/secret"]; changed != tc.secret {
				t.Errorf("checksum/secret changed = %v, want %v", changed, tc.secret)
			}
		})
	}
}

// TestAppFailures: app values that would put a secret in the ConfigMap, or
// that cannot work, stop the render with a message naming the app.
func TestAppFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"client secret file", withApp(t, apps(t), "wiki", "oidc.clientSecretFile", "/x"),
			"config.apps[wiki].oidc.clientSecretFile: give the app's client secret as config.apps[wiki].oidc.clientSecret or in a Secret of yours"},
		{"client secret file beside a secret", withApp(t, apps(t), "grafana", "oidc.clientSecretFile", "/x"), "config.apps[grafana].oidc.clientSecretFile"},
		{"inline secret with existingSecret", apps(t, "existingSecret", "mine"),
			"config.apps[grafana].oidc.clientSecret: with existingSecret the chart creates no Secret to hold it; put it in your Secret"},
		{"inline and existing secret", withApp(t, apps(t), "argocd", "oidc.clientSecret", "x"),
			"config.apps[argocd].oidc: clientSecret and existingSecret are both set"},
		{"key without a Secret", withApp(t, apps(t), "wiki", "oidc.existingSecretKey", "k"),
			"config.apps[wiki].oidc.existingSecretKey: set config.apps[wiki].oidc.existingSecret too"},
		{"duplicate name", withApp(t, apps(t), "wiki", "name", "grafana"), `config.apps[2].name: "grafana" is also config.apps[0]'s name`},
		{"no client ID anywhere", withApp(t, apps(t, "config.oidc.clientID", ""), "wiki", "oidc", map[string]any{}),
			"config.apps[wiki].oidc.clientID is required"},
		{"no issuer anywhere", apps(t, "config.oidc.issuerURL", ""), "config.apps[grafana].oidc.issuerURL is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir, tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestAppsOwnIssuers: with apps, the top-level oidc may name neither issuer
// nor client when every app has its own, and extauth accepts the result.
func TestAppsOwnIssuers(t *testing.T) {
	app := func(name string) map[string]any {
		return map[string]any{"name": name, "hosts": []any{name + ".example.com"}, "session": map[string]any{"cookieName": "_extauth_" + name},
			"oidc": map[string]any{"issuerURL": "https://" + name + "-idp.example.com/", "clientID": name, "clientSecret": name + "-s3cr3t"}}
	}
	o := render(t, minimal(t, "config.oidc", map[string]any{}, "config.apps", []any{app("a"), app("b")}))
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	if cfg.HasClient() || len(cfg.Apps) != 2 {
		t.Fatalf("top-level client %v, %d apps; want none and 2", cfg.HasClient(), len(cfg.Apps))
	}
	for _, a := range cfg.Apps {
		if a.OIDC.IssuerURL != "https://"+a.Name+"-idp.example.com/" || a.OIDC.ClientSecret != a.Name+"-s3cr3t" {
			t.Errorf("app %s: issuer %q, secret %q", a.Name, a.OIDC.IssuerURL, a.OIDC.ClientSecret)
		}
	}
}

// TestAppsNotes: NOTES list the apps with their hosts, and which Secret
// each existingSecret app reads; nothing about apps without them.
func TestAppsNotes(t *testing.T) {
	notes := render(t, apps(t)).Notes
	for _, line := range []string{
		"\nApps (config.apps), chosen by the request's host or by ?app=NAME in the auth-url:\n",
		"\n  grafana: grafana.example.com, *.grafana.example.com\n",
		"\n  argocd: argocd.example.com (client secret: key client_secret of the Secret argocd-oidc)\n",
		"\n  wiki: wiki.example.com\n",
		"kubectl -n auth rollout restart deployment/extauth",
	} {
		if !strings.Contains(notes, line) {
			t.Errorf("NOTES lack %q:\n%s", line, notes)
		}
	}
	if n := render(t, minimal(t)).Notes; strings.Contains(n, "config.apps") {
		t.Errorf("NOTES mention apps without any:\n%s", n)
	}
	inline := withApp(t, apps(t), "argocd", "oidc", map[string]any{"clientID": "argocd", "clientSecret": "x"})
	if n := render(t, inline).Notes; !strings.Contains(n, "\n  argocd: argocd.example.com\n") || strings.Contains(n, "those Secrets") {
		t.Errorf("NOTES with no app's existingSecret:\n%s", n)
	}
}

// TestAppsReadmeExample: the values of the chart README's apps section
// render, and extauth accepts the config they make (argocd's Secret stood
// in for by existingSecrets).
func TestAppsReadmeExample(t *testing.T) {
	_, block := readmeSection(t, "Many apps, one deployment")
	var vals map[string]any
	if err := yaml.Unmarshal([]byte(block), &vals); err != nil {
		t.Fatalf("README.md apps example: %v", err)
	}
	o := render(t, vals)
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	secrets := map[string]string{}
	for _, a := range cfg.Apps {
		secrets[a.Name] = a.OIDC.ClientSecret
	}
	if cfg.HasClient() || !reflect.DeepEqual(secrets, map[string]string{"grafana": "change-me", "argocd": "default-key"}) {
		t.Errorf("README example: top-level client %v, apps' secrets %v", cfg.HasClient(), secrets)
	}
}
