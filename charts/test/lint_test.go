package charttest

import (
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// TestLint runs `helm lint` (the SDK's lint package) with the required values
// and with every option on: no errors and no warnings.
func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{"minimal": minimal(t), "all-on": allOn(t), "apps": apps(t),
		"assertion": withAssertion(t, assertionKey(t), []string{assertionKey(t)})} {
		t.Run(name, func(t *testing.T) {
			res := lint.AllWithKubeVersion(ChartDir, vals, Namespace, kubeVersion)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("%s", m)
				} else {
					t.Logf("%s", m)
				}
			}
		})
	}
}

// TestLintWithoutValues: `helm lint charts/extauth` passes without values
// too (lint mode reports the template's fail for the required issuer and
// client ID as a note, not an error).
func TestLintWithoutValues(t *testing.T) {
	res := lint.AllWithKubeVersion(ChartDir, nil, Namespace, kubeVersion)
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("%s", m)
		}
	}
}

// TestSchema: values.schema.json rejects wrong types and unknown keys.
func TestSchema(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string // in the error
	}{
		{"replicaCount string", minimal(t, "replicaCount", "two"), "replicaCount"},
		{"unknown top-level key", minimal(t, "replicas", 2), "replicas"},
		{"misspelt top-level key", minimal(t, "networkPolicies", map[string]any{"enabled": true}), "networkPolicies"},
		{"enabled string", minimal(t, "ingress.enabled", "yes"), "ingress"},
		{"unknown image key", minimal(t, "image.digest", "sha256:0"), "digest"},
		{"pull policy", minimal(t, "image.pullPolicy", "Sometimes"), "pullPolicy"},
		{"session secrets not a list", minimal(t, "secrets.sessionSecrets", "abc"), "sessionSecrets"},
		{"unknown config section", minimal(t, "config.sesion", map[string]any{}), "sesion"},
		{"bad duration", minimal(t, "config.server.shutdownTimeout", 15), "shutdownTimeout"},
		{"provider port", minimal(t, "networkPolicy.egress.providerPorts", []any{"https"}), "providerPorts"},
		{"redis db string", minimal(t, "redis.db", "x"), "db"},
		{"redis db negative", minimal(t, "redis.db", -1), "db"},
		{"redis enabled string", minimal(t, "redis.enabled", "true"), "enabled"},
		{"unknown redis key", minimal(t, "redis.cluster", true), "cluster"},
		{"unknown redis tls key", minimal(t, "redis.tls.verify", false), "verify"},
		{"unknown redis sentinel key", minimal(t, "redis.sentinel.master", "m"), "master"},
		{"redis address without port", minimal(t, "redis.address", "redis.example.com"), "address"},
		{"sentinel addresses not a list", minimal(t, "redis.sentinel.addresses", "s:26379"), "addresses"},
		{"empty key prefix", minimal(t, "redis.keyPrefix", ""), "keyPrefix"},
		{"redisTo not a list", minimal(t, "networkPolicy.egress.redisTo", map[string]any{}), "redisTo"},
		{"apps not a list", minimal(t, "config.apps", map[string]any{"grafana": map[string]any{}}), "apps"},
		{"app name", withApp(t, apps(t), "grafana", "name", "Grafana"), "name"},
		{"app name too long", withApp(t, apps(t), "grafana", "name", strings.Repeat("g", 33)), "name"},
		{"unknown app key", withApp(t, apps(t), "grafana", "host", "grafana.example.com"), "host"},
		{"app without hosts", minimal(t, "config.apps", []any{map[string]any{"name": "wiki"}}), "hosts"},
		{"app hosts not a list", withApp(t, apps(t), "wiki", "hosts", "wiki.example.com"), "hosts"},
		{"app existingSecret not a string", withApp(t, apps(t), "argocd", "oidc.existingSecret", true), "existingSecret"},
		{"app oidc not an object", withApp(t, apps(t), "wiki", "oidc", "wiki"), "oidc"},
		{"assertion not an object", minimal(t, "config.assertion", true), "assertion"},
		{"assertion enabled string", minimal(t, "config.assertion.enabled", "true"), "enabled"},
		{"assertion lifetime number", minimal(t, "config.assertion.lifetime", 300), "lifetime"},
		{"assertion lifetime without unit", minimal(t, "config.assertion.lifetime", "300"), "lifetime"},
		{"assertion header with a space", minimal(t, "config.assertion.header", "X Auth Jwt"), "header"},
		{"assertion issuer not a string", minimal(t, "config.assertion.issuer", 1), "issuer"},
		{"unknown assertion key", minimal(t, "config.assertion.keyfile", "/x"), "keyfile"},
		{"previousKeyFiles not a list", minimal(t, "config.assertion.previousKeyFiles", "/x"), "previousKeyFiles"},
		{"assertionKey not a string", minimal(t, "secrets.assertionKey", []any{"pem"}), "assertionKey"},
		{"assertionPreviousKeys not a list", minimal(t, "secrets.assertionPreviousKeys", "pem"), "assertionPreviousKeys"},
		{"empty previous key", minimal(t, "secrets.assertionPreviousKeys", []any{""}), "assertionPreviousKeys"},
		{"previous key count string", minimal(t, "existingSecretAssertionPreviousKeyCount", "1"), "existingSecretAssertionPreviousKeyCount"},
		{"previous key count negative", minimal(t, "existingSecretAssertionPreviousKeyCount", -1), "existingSecretAssertionPreviousKeyCount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir, tc.vals)
			if err == nil {
				t.Fatal("rendered; want a schema error")
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want a schema error naming %q", err, tc.want)
			}
		})
	}
}

// TestChartMetadata: Chart.yaml as the release process and clusters expect.
func TestChartMetadata(t *testing.T) {
	chrt, err := loader.Load(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	m := chrt.Metadata
	if m.APIVersion != "v2" || m.Name != "extauth" || m.Version != "0.1.0" || m.AppVersion != "0.1.0" || m.KubeVersion != ">=1.27.0-0" {
		t.Errorf("Chart.yaml: apiVersion %q name %q version %q appVersion %q kubeVersion %q",
			m.APIVersion, m.Name, m.Version, m.AppVersion, m.KubeVersion)
	}
	for v, ok := range map[string]bool{"v1.26.9": false, "v1.27.0": true, "v1.30.2-eks-1": true} {
		if got := chartutil.IsCompatibleRange(m.KubeVersion, v); got != ok {
			t.Errorf("Kubernetes %s compatible = %v, want %v", v, got, ok)
		}
	}
	for _, f := range []string{"values.schema.json", "templates/NOTES.txt", "dashboards/extauth.json", "alerts/extauth-rules.yaml"} {
		found := slices.ContainsFunc(chrt.Raw, func(file *chart.File) bool { return file.Name == f })
		if !found {
			t.Errorf("the packaged chart lacks %s", f)
		}
	}
}
