package charttest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// redisValues: minimal values with Redis on at addr, then overrides.
func redisValues(t *testing.T, addr string, overrides ...any) map[string]any {
	t.Helper()
	return minimal(t, append([]any{"redis.enabled", true, "redis.address", addr}, overrides...)...)
}

// sessionSection is the session section of the rendered config file, as a
// plain map, to see which keys are there at all.
func sessionSection(t *testing.T, o *objects) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(o.ConfigMaps[o.Deployment.Name].Data["config.yaml"]), &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	s, _ := doc["session"].(map[string]any)
	if s == nil {
		t.Fatal("config.yaml has no session section")
	}
	return s
}

// manifest is every rendered object, as YAML.
func (o *objects) manifest() string {
	var b strings.Builder
	for _, d := range o.Docs {
		b.Write(d.YAML)
	}
	return b.String()
}

func volumeNames(o *objects) []string {
	var names []string
	for _, v := range o.Deployment.Spec.Template.Spec.Volumes {
		names = append(names, v.Name)
	}
	return names
}

func volume(t *testing.T, o *objects, name string) corev1.Volume {
	t.Helper()
	for _, v := range o.Deployment.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s: %v", name, volumeNames(o))
	return corev1.Volume{}
}

// egressTCPPorts are the TCP ports of the NetworkPolicy's egress rules.
func egressTCPPorts(np *networkingv1.NetworkPolicy) []int {
	var ports []int
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			if p.Protocol != nil && *p.Protocol == corev1.ProtocolTCP && p.Port != nil {
				ports = append(ports, p.Port.IntValue())
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// TestRedisDisabled: by default the config file has no session.store or
// session.redis, the Secret no Redis password, the pod no Redis volume and
// the NetworkPolicy no Redis port, even with redis.* values set.
func TestRedisDisabled(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": minimal(t, "networkPolicy.enabled", true),
		"values set, enabled false": minimal(t, "networkPolicy.enabled", true, "redis.address", "redis:6380", "redis.password", "r3dis-pass",
			"redis.existingSecret", "redis-creds", "redis.tls.enabled", true, "redis.tls.caSecret", "redis-ca"),
	} {
		t.Run(name, func(t *testing.T) {
			o := render(t, vals)
			s := sessionSection(t, o)
			for _, k := range []string{"store", "redis"} {
				if _, ok := s[k]; ok {
					t.Errorf("config.yaml has session.%s = %v with Redis off", k, s[k])
				}
			}
			for k := range o.Secret.Data {
				if strings.HasPrefix(k, "redis") {
					t.Errorf("the Secret has %s with Redis off", k)
				}
			}
			if got := volumeNames(o); !slices.Equal(got, []string{"config", "secrets"}) {
				t.Errorf("volumes %v, want config and secrets", got)
			}
			if got := egressTCPPorts(o.NetworkPolicy); !slices.Equal(got, []int{53, 443}) {
				t.Errorf("egress TCP ports %v, want [53 443]", got)
			}
			if m := o.manifest(); strings.Contains(m, "r3dis-pass") || strings.Contains(m, base64.StdEncoding.EncodeToString([]byte("r3dis-pass"))) {
				t.Error("redis.password is in the manifest with Redis off")
			}
		})
	}
}

// TestRedisEnabled: session.redis with the address, and the password as a
// file from the chart's Secret, not in the ConfigMap; sessions stay in the
// cookie.
func TestRedisEnabled(t *testing.T) {
	o := render(t, redisValues(t, "redis-master.redis.svc.cluster.local:6379", "redis.password", "r3dis-pass",
		"redis.username", "extauth", "redis.db", 4, "redis.keyPrefix", "auth:"))
	cm := o.ConfigMaps["extauth"]
	doc := parseConfigDoc(t, cm)
	r := doc.Session.Redis
	if r == nil || !r.Enabled || r.Address != "redis-master.redis.svc.cluster.local:6379" {
		t.Fatalf("session.redis %+v, want enabled with the address", r)
	}
	if doc.Session.Store != "cookie" {
		t.Errorf("session.store %q, want cookie (redis.sessionStore false)", doc.Session.Store)
	}
	if r.PasswordFile != "/etc/extauth/secrets/redis-password" {
		t.Errorf("session.redis.passwordFile %q, want the chart's Secret's redis-password", r.PasswordFile)
	}
	if got := string(o.Secret.Data["redis-password"]); got != "r3dis-pass" {
		t.Errorf("Secret redis-password = %q, want the password", got)
	}
	if strings.Contains(cm.Data["config.yaml"], "r3dis-pass") {
		t.Error("the Redis password is in the ConfigMap")
	}
	s := sessionSection(t, o)
	redis := s["redis"].(map[string]any)
	if _, ok := redis["password"]; ok {
		t.Error("session.redis.password is set in the ConfigMap")
	}
	for _, k := range []string{"tls", "sentinel"} {
		if _, ok := redis[k]; ok {
			t.Errorf("session.redis.%s rendered though off: %v", k, redis[k])
		}
	}

	cfg := loadWithSecrets(t, cm.Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	c := cfg.Session.Redis
	if !c.Enabled || c.Password != "r3dis-pass" || c.Username != "extauth" || c.DB != 4 || c.KeyPrefix != "auth:" || cfg.Session.Store != "cookie" {
		t.Errorf("loaded session.redis %+v, store %q", c, cfg.Session.Store)
	}
	if !strings.Contains(o.Notes, "redis-master.redis.svc.cluster.local:6379") || !strings.Contains(o.Notes, "ExtauthRedisErrors") {
		t.Errorf("NOTES do not tell about Redis:\n%s", o.Notes)
	}
}

// TestRedisSessionStore: redis.sessionStore puts the sessions in Redis.
func TestRedisSessionStore(t *testing.T) {
	o := render(t, redisValues(t, "redis:6379", "redis.sessionStore", true))
	doc := parseConfigDoc(t, o.ConfigMaps["extauth"])
	if doc.Session.Store != "redis" || doc.Session.Redis == nil || !doc.Session.Redis.Enabled {
		t.Errorf("session.store %q, redis %+v; want redis, enabled", doc.Session.Store, doc.Session.Redis)
	}
	if doc.Session.Redis.PasswordFile != "" {
		t.Errorf("passwordFile %q without a password", doc.Session.Redis.PasswordFile)
	}
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	if cfg.Session.Store != "redis" || !cfg.Session.RedisUsed() {
		t.Errorf("loaded store %q", cfg.Session.Store)
	}
	if !strings.Contains(o.Notes, "session.store: redis") {
		t.Errorf("NOTES do not say where sessions live:\n%s", o.Notes)
	}
}

// TestRedisExistingSecret: the password comes from the user's Secret, a key
// renamed to the file the config names; the chart's Secret holds none.
func TestRedisExistingSecret(t *testing.T) {
	o := render(t, redisValues(t, "redis:6379", "redis.existingSecret", "redis-creds", "redis.existingSecretPasswordKey", "password",
		"redis.password", "ignored-pass", "redis.sentinel.masterName", "mymaster", "redis.sentinel.addresses", []any{"sentinel:26379"},
		"redis.sentinel.existingSecretPasswordKey", "sentinel-password", "redis.sentinel.password", "ignored-sentinel"))
	if _, ok := o.Secret.Data["redis-password"]; ok {
		t.Error("the chart's Secret has redis-password though redis.existingSecret is set")
	}
	if m := o.manifest(); strings.Contains(m, "ignored") || strings.Contains(m, base64.StdEncoding.EncodeToString([]byte("ignored"))[:8]) {
		t.Error("redis.password or redis.sentinel.password is in the manifest though redis.existingSecret is set")
	}
	v := volume(t, o, "redis-secret")
	want := []corev1.KeyToPath{{Key: "password", Path: "redis-password"}, {Key: "sentinel-password", Path: "redis-sentinel-password"}}
	if v.Secret == nil || v.Secret.SecretName != "redis-creds" || !slices.Equal(v.Secret.Items, want) ||
		v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
		t.Errorf("redis-secret volume %+v, want Secret redis-creds with items %v, mode 0440", v.Secret, want)
	}
	doc := parseConfigDoc(t, o.ConfigMaps["extauth"])
	if r := doc.Session.Redis; r.PasswordFile != "/etc/extauth/redis/redis-password" || r.Sentinel.PasswordFile != "/etc/extauth/redis/redis-sentinel-password" {
		t.Errorf("passwordFile %q, sentinel.passwordFile %q", r.PasswordFile, r.Sentinel.PasswordFile)
	}
	secrets := existingSecrets(t)
	secrets["redis-creds"]["sentinel-password"] = []byte("sentinel-from-creds")
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, secrets))
	if cfg.Session.Redis.Password != "from-redis-creds" || cfg.Session.Redis.Sentinel.Password != "sentinel-from-creds" {
		t.Errorf("loaded passwords %q, %q", cfg.Session.Redis.Password, cfg.Session.Redis.Sentinel.Password)
	}
	if !strings.Contains(o.Notes, "The Secret redis-creds must hold the key password and sentinel-password") {
		t.Errorf("NOTES do not name the keys redis.existingSecret needs:\n%s", o.Notes)
	}

	// The default key, and no sentinel item without a Sentinel key.
	o = render(t, redisValues(t, "redis:6379", "redis.existingSecret", "redis-creds"))
	v = volume(t, o, "redis-secret")
	if !slices.Equal(v.Secret.Items, []corev1.KeyToPath{{Key: "redis-password", Path: "redis-password"}}) {
		t.Errorf("redis-secret items %v, want redis-password only", v.Secret.Items)
	}
	cfg = loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	if cfg.Session.Redis.Password != "default-key" {
		t.Errorf("loaded password %q, want the key redis-password's", cfg.Session.Redis.Password)
	}
	// A changed password in that Secret does not change the pods: say so.
	if !strings.Contains(o.Notes, "do not") || !strings.Contains(o.Notes, "restart") {
		t.Errorf("NOTES do not say that pods keep the old password:\n%s", o.Notes)
	}
}

// TestRedisTLSAndSentinel: TLS with a CA Secret, and Sentinel with its
// password in the chart's Secret.
func TestRedisTLSAndSentinel(t *testing.T) {
	o := render(t, minimal(t, "redis.enabled", true, "redis.tls.enabled", true, "redis.tls.caSecret", "redis-ca",
		"redis.tls.serverName", "redis.example.com", "redis.sentinel.masterName", "mymaster",
		"redis.sentinel.addresses", []any{"s0:26379", "s1:26379"}, "redis.sentinel.password", "s3ntinel-pass"))
	v := volume(t, o, "redis-ca")
	if v.Secret == nil || v.Secret.SecretName != "redis-ca" || !slices.Equal(v.Secret.Items, []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}) {
		t.Errorf("redis-ca volume %+v", v.Secret)
	}
	s := sessionSection(t, o)
	redis := s["redis"].(map[string]any)
	if _, ok := redis["address"]; ok {
		t.Errorf("session.redis.address %v rendered with Sentinel (extauth does not use it)", redis["address"])
	}
	if got := string(o.Secret.Data["redis-sentinel-password"]); got != "s3ntinel-pass" {
		t.Errorf("Secret redis-sentinel-password = %q", got)
	}
	cfg := loadWithSecrets(t, o.ConfigMaps["extauth"].Data["config.yaml"], podFiles(t, o, existingSecrets(t)))
	r := cfg.Session.Redis
	if !r.TLS.Enabled || r.TLS.ServerName != "redis.example.com" || len(readCA(t, r.TLS.CAFile)) == 0 || r.Sentinel.MasterName != "mymaster" ||
		!slices.Equal(r.Sentinel.Addresses, []string{"s0:26379", "s1:26379"}) || r.Sentinel.Password != "s3ntinel-pass" || r.Password != "" {
		t.Errorf("loaded session.redis %+v", r)
	}
}

// TestRedisNetworkPolicy: egress to the ports of the Redis and Sentinel
// addresses, narrowed by redisTo.
func TestRedisNetworkPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want []int
	}{
		{"address", redisValues(t, "redis.example.com:6380", "networkPolicy.enabled", true), []int{53, 443, 6380}},
		{"IPv6 address", redisValues(t, "[fd00::1]:6390", "networkPolicy.enabled", true), []int{53, 443, 6390}},
		{"sentinel", minimal(t, "networkPolicy.enabled", true, "redis.enabled", true, "redis.sentinel.masterName", "m",
			"redis.sentinel.addresses", []any{"s0:26379", "s1:26379", "[fd00::2]:26380"}), []int{53, 443, 6379, 26379, 26380}},
		{"sentinel, master port from address", minimal(t, "networkPolicy.enabled", true, "redis.enabled", true, "redis.address", "redis:7000",
			"redis.sentinel.masterName", "m", "redis.sentinel.addresses", []any{"s0:26379"}), []int{53, 443, 7000, 26379}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np := render(t, tc.vals).NetworkPolicy
			if got := egressTCPPorts(np); !slices.Equal(got, tc.want) {
				t.Errorf("egress TCP ports %v, want %v", got, tc.want)
			}
		})
	}

	np := render(t, allOn(t)).NetworkPolicy
	var redisRule *networkingv1.NetworkPolicyEgressRule
	for i, r := range np.Spec.Egress {
		if slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.IntValue() == 26379 }) {
			redisRule = &np.Spec.Egress[i]
		}
	}
	if redisRule == nil {
		t.Fatalf("all-on: no egress rule for the Sentinels: %+v", np.Spec.Egress)
	}
	var ports []int
	for _, p := range redisRule.Ports {
		ports = append(ports, p.Port.IntValue())
	}
	if !slices.Equal(ports, []int{26379, 6380}) || len(redisRule.To) != 1 || redisRule.To[0].NamespaceSelector == nil ||
		redisRule.To[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "redis" {
		t.Errorf("all-on Redis egress rule %+v, want ports 26379 and 6380 to the redis namespace", redisRule)
	}
}

// TestRedisNotes: NOTES advise Redis (or affinity) when several replicas run
// without it, and only then.
func TestRedisNotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string // "" when the advice must be absent
	}{
		{"two replicas", minimal(t), "2 replicas run without Redis"},
		{"one replica", minimal(t, "replicaCount", 1), ""},
		{"autoscaling", minimal(t, "replicaCount", 1, "autoscaling.enabled", true, "autoscaling.minReplicas", 1, "autoscaling.maxReplicas", 4), "up to 4 replicas run without Redis"},
		{"autoscaling to one", minimal(t, "autoscaling.enabled", true, "autoscaling.minReplicas", 1, "autoscaling.maxReplicas", 1), ""},
		{"redis", redisValues(t, "redis:6379"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notes := render(t, tc.vals).Notes
			if tc.want == "" {
				if strings.Contains(notes, "without Redis") {
					t.Errorf("NOTES advise Redis:\n%s", notes)
				}
				return
			}
			if !strings.Contains(notes, tc.want) || !strings.Contains(notes, "redis.enabled=true") || !strings.Contains(notes, "session") {
				t.Errorf("NOTES lack %q and the advice:\n%s", tc.want, notes)
			}
		})
	}
}

// TestRedisMonitoring: the dashboard has the shared-store row with the
// store metrics, its panels have unique ids and do not overlap, and the
// alerts include ExtauthRedisErrors. (e2e's monitoring test checks that
// every metric is exported and every query parses.)
func TestRedisMonitoring(t *testing.T) {
	data, err := os.ReadFile(ChartDir + "/dashboards/extauth.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct {
				H, W, X, Y int
			} `json:"gridPos"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	ids := map[int]string{}
	cells := map[[2]int]string{}
	row := ""
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if other, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			row = p.Title
			continue
		}
		if row != "Shared store (Redis)" {
			continue
		}
		for _, tg := range p.Targets {
			for _, m := range []string{"extauth_store_operations_total", "extauth_store_latency_seconds_bucket", "extauth_refresh_lock_wait_seconds_bucket"} {
				if strings.Contains(tg.Expr, m) {
					used[m] = true
				}
			}
			if strings.Contains(tg.Expr, `result="error"`) {
				used["error ratio"] = true
			}
			if strings.Contains(tg.Expr, "histogram_quantile(0.99") && strings.Contains(tg.Expr, "by (op, le)") {
				used["p99 by op"] = true
			}
			if strings.Contains(tg.Expr, "histogram_quantile(0.5,") && strings.Contains(tg.Expr, "extauth_refresh_lock_wait_seconds_bucket") {
				used["lock wait p50"] = true
			}
		}
	}
	for _, want := range []string{"extauth_store_operations_total", "extauth_store_latency_seconds_bucket", "extauth_refresh_lock_wait_seconds_bucket",
		"error ratio", "p99 by op", "lock wait p50"} {
		if !used[want] {
			t.Errorf("the dashboard's \"Shared store (Redis)\" row lacks %s", want)
		}
	}

	var rules ruleFile
	raw, err := os.ReadFile(ChartDir + "/alerts/extauth-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	decodeStrict(t, "alerts/extauth-rules.yaml", raw, &rules)
	found := false
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "ExtauthRedisErrors" {
				continue
			}
			found = true
			if r.For != "5m" || r.Labels["severity"] != "warning" || !strings.Contains(r.Expr, "extauth_store_operations_total") ||
				!strings.Contains(r.Expr, `result="error"`) || !strings.Contains(r.Expr, "> 0.05") ||
				r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.Annotations["runbook"] == "" {
				t.Errorf("ExtauthRedisErrors: %+v", r)
			}
		}
	}
	if !found {
		t.Error("no ExtauthRedisErrors alert")
	}
}
