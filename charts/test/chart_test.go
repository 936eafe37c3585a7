package charttest

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// TestDefaults: with only the required values, the chart renders the core
// objects and none of the optional ones.
func TestDefaults(t *testing.T) {
	o := render(t, minimal(t))
	for name, present := range map[string]bool{
		"Deployment":     o.Deployment != nil,
		"Service":        o.Service != nil,
		"ConfigMap":      o.ConfigMaps["extauth"] != nil,
		"Secret":         o.Secret != nil,
		"ServiceAccount": o.ServiceAccount != nil,
		"PDB":            o.PDB != nil, // two replicas by default
	} {
		if !present {
			t.Errorf("no %s", name)
		}
	}
	for name, present := range map[string]bool{
		"Ingress":        o.Ingress != nil,
		"HTTPRoute":      o.HTTPRoute != nil,
		"NetworkPolicy":  o.NetworkPolicy != nil,
		"HPA":            o.HPA != nil,
		"ServiceMonitor": o.ServiceMonitor != nil,
		"PrometheusRule": o.PrometheusRule != nil,
		"dashboard":      len(o.ConfigMaps) > 1,
	} {
		if present {
			t.Errorf("%s rendered, but it is off by default", name)
		}
	}
	if r := o.Deployment.Spec.Replicas; r == nil || *r != 2 {
		t.Errorf("replicas = %v, want 2", r)
	}
	if got, want := o.container(t).Image, "ghcr.io/extauth/extauth:0.1.0"; got != want {
		t.Errorf("image = %q, want %q (tag = appVersion)", got, want)
	}
	if s := o.Deployment.Spec.Strategy; s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil ||
		s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update = %+v, want maxUnavailable 0", s.RollingUpdate)
	}
	if o.ServiceAccount.AutomountServiceAccountToken == nil || *o.ServiceAccount.AutomountServiceAccountToken {
		t.Error("the ServiceAccount mounts an API token; extauth needs none")
	}
	// A public client: no client secret, a generated session key.
	if _, ok := o.Secret.Data["client-secret"]; ok {
		t.Error("client-secret in the Secret though secrets.clientSecret is empty")
	}
	if len(o.Secret.Data["session-secrets"]) == 0 {
		t.Error("no generated session-secrets")
	}
}

// TestAllOn: every option on renders every object, each one right.
func TestAllOn(t *testing.T) {
	o := render(t, allOn(t))
	const name = "extauth-main" // fullnameOverride
	for kind, present := range map[string]bool{
		"Deployment": o.Deployment != nil, "Service": o.Service != nil, "Secret": o.Secret != nil,
		"ServiceAccount": o.ServiceAccount != nil, "Ingress": o.Ingress != nil, "HTTPRoute": o.HTTPRoute != nil,
		"NetworkPolicy": o.NetworkPolicy != nil, "PDB": o.PDB != nil, "HPA": o.HPA != nil,
		"ServiceMonitor": o.ServiceMonitor != nil, "PrometheusRule": o.PrometheusRule != nil,
		"config ConfigMap": o.ConfigMaps[name] != nil, "dashboard ConfigMap": o.ConfigMaps[name+"-dashboard"] != nil,
	} {
		if !present {
			t.Errorf("no %s", kind)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, d := range o.Docs {
		var meta struct {
			Metadata struct {
				Namespace string            `json:"namespace"`
				Labels    map[string]string `json:"labels"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(d.YAML, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Metadata.Namespace != Namespace {
			t.Errorf("%s %s: namespace %q, want %q", d.Kind, d.Name, meta.Metadata.Namespace, Namespace)
		}
		for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if meta.Metadata.Labels[l] == "" {
				t.Errorf("%s %s: no label %s", d.Kind, d.Name, l)
			}
		}
	}

	spec := o.Deployment.Spec.Template.Spec
	c := o.container(t)
	if c.Image != "registry.example.com/extauth/extauth:0.1.0-rc.1" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q %q", c.Image, c.ImagePullPolicy)
	}
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "registry-credentials" {
		t.Errorf("imagePullSecrets = %v", spec.ImagePullSecrets)
	}
	if spec.ServiceAccountName != "extauth-sa" || o.ServiceAccount.Name != "extauth-sa" {
		t.Errorf("service account %q / %q, want extauth-sa", spec.ServiceAccountName, o.ServiceAccount.Name)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.Tolerations) != 1 || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
		t.Errorf("scheduling values not applied: %v %v %v", spec.NodeSelector, spec.Tolerations, spec.Affinity)
	}
	if o.Deployment.Spec.Template.Annotations["example.com/scrape"] != "false" {
		t.Error("podAnnotations not applied")
	}
	if got := c.Resources.Limits.Memory().String(); got != "256Mi" {
		t.Errorf("memory limit %s, want 256Mi", got)
	}

	// The /oauth2 routes go to the Service's http port.
	if o.Ingress.Spec.IngressClassName == nil || *o.Ingress.Spec.IngressClassName != "nginx" {
		t.Errorf("ingressClassName = %v", o.Ingress.Spec.IngressClassName)
	}
	var hosts []string
	for _, r := range o.Ingress.Spec.Rules {
		hosts = append(hosts, r.Host)
		p := r.HTTP.Paths[0]
		if p.Path != "/oauth2" || p.PathType == nil || *p.PathType != "Prefix" ||
			p.Backend.Service.Name != name || p.Backend.Service.Port.Name != "http" {
			t.Errorf("ingress path %+v", p)
		}
	}
	if !slices.Equal(hosts, []string{"app.example.com", "grafana.example.com"}) || len(o.Ingress.Spec.TLS) != 1 {
		t.Errorf("ingress hosts %v, tls %v", hosts, o.Ingress.Spec.TLS)
	}
	if o.Ingress.Annotations["nginx.ingress.kubernetes.io/proxy-buffer-size"] != "16k" {
		t.Error("the /oauth2 Ingress lost the proxy-buffer-size default (the callback's Set-Cookie needs it)")
	}
	hr := o.HTTPRoute.Spec
	if len(hr.ParentRefs) != 1 || hr.ParentRefs[0].Name != "eg" || !slices.Equal(hr.Hostnames, []string{"app.example.com"}) ||
		len(hr.Rules) != 1 || hr.Rules[0].Matches[0].Path.Type != "PathPrefix" || hr.Rules[0].Matches[0].Path.Value != "/oauth2" ||
		hr.Rules[0].BackendRefs[0].Name != name || hr.Rules[0].BackendRefs[0].Port != 4180 {
		t.Errorf("HTTPRoute spec %+v", hr)
	}

	// The autoscaler owns the replica count.
	if o.Deployment.Spec.Replicas != nil {
		t.Errorf("replicas = %d with autoscaling on; want no replicas field", *o.Deployment.Spec.Replicas)
	}
	h := o.HPA.Spec
	if h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != name || h.MinReplicas == nil || *h.MinReplicas != 2 ||
		h.MaxReplicas != 8 || len(h.Metrics) != 1 || h.Metrics[0].Resource == nil ||
		h.Metrics[0].Resource.Target.AverageUtilization == nil || *h.Metrics[0].Resource.Target.AverageUtilization != 70 {
		t.Errorf("HPA spec %+v", h)
	}

	sm := o.ServiceMonitor
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" ||
		sm.Spec.Endpoints[0].Interval != "15s" || sm.Spec.Endpoints[0].ScrapeTimeout != "10s" {
		t.Errorf("ServiceMonitor endpoints %+v, want port metrics", sm.Spec.Endpoints)
	}
	if sm.Metadata.Labels["release"] != "kube-prometheus-stack" || o.PrometheusRule.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Error("serviceMonitor/prometheusRule labels not applied")
	}
	// The ServiceMonitor must select the Service, and the Service name the port.
	for k, v := range sm.Spec.Selector.MatchLabels {
		if o.Service.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s; the Service has %q", k, v, o.Service.Labels[k])
		}
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{Namespace}) {
		t.Errorf("ServiceMonitor namespaceSelector %v", sm.Spec.NamespaceSelector.MatchNames)
	}
}

func TestSecurityContext(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": minimal(t), "all-on": allOn(t)} {
		t.Run(name, func(t *testing.T) {
			o := render(t, vals)
			pod := o.Deployment.Spec.Template.Spec
			psc := pod.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
				psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v", psc)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Error("pod mounts a service account token")
			}
			sc := o.container(t).SecurityContext
			switch {
			case sc == nil:
				t.Fatal("no container securityContext")
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot, sc.RunAsUser == nil || *sc.RunAsUser != 65532:
				t.Errorf("container runs as %v (non-root %v), want 65532", sc.RunAsUser, sc.RunAsNonRoot)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Error("root filesystem writable")
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Error("privilege escalation allowed")
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("capabilities %+v, want drop ALL", sc.Capabilities)
			case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("container seccompProfile %+v", sc.SeccompProfile)
			case sc.Privileged != nil && *sc.Privileged:
				t.Error("privileged")
			}
		})
	}
}

func TestProbesPortsAndMounts(t *testing.T) {
	o := render(t, minimal(t))
	c := o.container(t)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(ports, map[string]int32{"http": 4180, "metrics": 9090}) {
		t.Errorf("container ports %v", ports)
	}
	for name, pr := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", name)
			continue
		}
		if g := pr.probe.HTTPGet; g.Path != pr.path || g.Port != intstr.FromString("http") {
			t.Errorf("%s probe GET %s on %s, want %s on http", name, g.Path, g.Port.String(), pr.path)
		}
	}
	svc := map[string][2]string{}
	for _, p := range o.Service.Spec.Ports {
		svc[p.Name] = [2]string{strconv.Itoa(int(p.Port)), p.TargetPort.String()}
	}
	if !reflect.DeepEqual(svc, map[string][2]string{"http": {"4180", "http"}, "metrics": {"9090", "metrics"}}) {
		t.Errorf("service ports %v", svc)
	}
	for k, v := range o.Service.Spec.Selector {
		if o.Deployment.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s; the pods have %q", k, v, o.Deployment.Spec.Template.Labels[k])
		}
	}
	if got := c.Args; !slices.Equal(got, []string{"serve", "--config", "/etc/extauth/config.yaml"}) {
		t.Errorf("args %q", got)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts["config"]; m.MountPath != "/etc/extauth/config.yaml" || m.SubPath != "config.yaml" || !m.ReadOnly {
		t.Errorf("config mount %+v", m)
	}
	if m := mounts["secrets"]; m.MountPath != "/etc/extauth/secrets" || !m.ReadOnly {
		t.Errorf("secrets mount %+v", m)
	}
	req := c.Resources.Requests
	if req.Cpu().String() != "50m" || req.Memory().String() != "64Mi" || c.Resources.Limits.Memory().String() != "128Mi" {
		t.Errorf("resources %+v", c.Resources)
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit by default: throttling shows up as check latency")
	}
	keys := map[string]bool{}
	for _, tsc := range o.Deployment.Spec.Template.Spec.TopologySpreadConstraints {
		keys[tsc.TopologyKey] = true
		if tsc.WhenUnsatisfiable != corev1.ScheduleAnyway {
			t.Errorf("spread over %s: %s, want ScheduleAnyway", tsc.TopologyKey, tsc.WhenUnsatisfiable)
		}
		if tsc.LabelSelector == nil || !reflect.DeepEqual(tsc.LabelSelector.MatchLabels, o.Deployment.Spec.Selector.MatchLabels) {
			t.Errorf("spread over %s selects %v", tsc.TopologyKey, tsc.LabelSelector)
		}
	}
	if !keys["topology.kubernetes.io/zone"] || !keys["kubernetes.io/hostname"] {
		t.Errorf("topology spread keys %v, want zone and hostname", keys)
	}
}

// TestChecksums: a config change or a secret change rolls the pods; other
// changes leave the checksums alone.
func TestChecksums(t *testing.T) {
	annotations := func(v map[string]any) map[string]string { return checksums(t, v) }
	base := annotations(minimal(t))
	for _, tc := range []struct {
		name           string
		vals           map[string]any
		config, secret bool // changed?
	}{
		{name: "log level", vals: minimal(t, "config.logging.level", "debug"), config: true},
		{name: "issuer", vals: minimal(t, "config.oidc.issuerURL", "https://idp.example.org/"), config: true},
		{name: "client secret", vals: minimal(t, "secrets.clientSecret", "x"), config: true, secret: true}, // the config gains clientSecretFile
		{name: "session secrets", vals: minimal(t, "secrets.sessionSecrets", []any{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}), secret: true},
		{name: "replicas", vals: minimal(t, "replicaCount", 5)},
		{name: "pod annotation", vals: minimal(t, "podAnnotations", map[string]any{"a": "b"})},
		{name: "redis values while off", vals: minimal(t, "redis.password", "x", "redis.address", "redis:6379")},
		{name: "redis on", vals: minimal(t, "redis.enabled", true, "redis.address", "redis:6379"), config: true},
		{name: "redis password", vals: minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "redis.password", "x"), config: true, secret: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := annotations(tc.vals)
			if changed := got["checksum/config"] != base["checksum/config"]; changed != tc.config {
				t.Errorf("checksum/config changed = %v, want %v", changed, tc.config)
			}
			if changed := got["checksum/secret"] != base["checksum/secret"]; changed != tc.secret {
				t.Errorf("checksum/secret changed = %v, want %v", changed, tc.secret)
			}
		})
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want bool
	}{
		{"2 replicas", minimal(t), true},
		{"1 replica", minimal(t, "replicaCount", 1), false},
		{"3 replicas", minimal(t, "replicaCount", 3), true},
		{"disabled", minimal(t, "podDisruptionBudget.enabled", false), false},
		{"autoscaling from 1", minimal(t, "autoscaling.enabled", true, "autoscaling.minReplicas", 1, "replicaCount", 3), false},
		{"autoscaling from 2", minimal(t, "autoscaling.enabled", true, "autoscaling.minReplicas", 2, "replicaCount", 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := render(t, tc.vals)
			if got := o.PDB != nil; got != tc.want {
				t.Fatalf("PDB rendered = %v, want %v", got, tc.want)
			}
			if o.PDB == nil {
				return
			}
			if !reflect.DeepEqual(o.PDB.Spec.Selector.MatchLabels, o.Deployment.Spec.Selector.MatchLabels) {
				t.Errorf("PDB selects %v, pods %v", o.PDB.Spec.Selector.MatchLabels, o.Deployment.Spec.Selector.MatchLabels)
			}
			if o.PDB.Spec.MaxUnavailable == nil || o.PDB.Spec.MaxUnavailable.IntValue() != 1 || o.PDB.Spec.MinAvailable != nil {
				t.Errorf("PDB spec %+v, want maxUnavailable 1", o.PDB.Spec)
			}
		})
	}
	o := render(t, minimal(t, "podDisruptionBudget.minAvailable", "50%"))
	if o.PDB.Spec.MinAvailable == nil || o.PDB.Spec.MinAvailable.String() != "50%" || o.PDB.Spec.MaxUnavailable != nil {
		t.Errorf("minAvailable 50%%: PDB spec %+v", o.PDB.Spec)
	}
}

func TestAutoscaling(t *testing.T) {
	off := render(t, minimal(t, "replicaCount", 4))
	if off.HPA != nil {
		t.Error("HPA rendered with autoscaling off")
	}
	if r := off.Deployment.Spec.Replicas; r == nil || *r != 4 {
		t.Errorf("replicas = %v, want 4", r)
	}
	on := render(t, minimal(t, "autoscaling.enabled", true))
	if on.HPA == nil {
		t.Fatal("no HPA with autoscaling on")
	}
	if on.Deployment.Spec.Replicas != nil {
		t.Error("Deployment has replicas with autoscaling on")
	}
	for _, d := range on.Docs {
		if d.Kind == "Deployment" && strings.Contains(string(d.YAML), "replicas:") {
			t.Errorf("Deployment YAML has a replicas field:\n%s", d.YAML)
		}
	}
}

// TestTerminationGrace: the pod's grace period outlasts server.shutdownTimeout.
func TestTerminationGrace(t *testing.T) {
	for _, tc := range []struct {
		timeout string
		secs    int64 // shutdownTimeout, rounded up
	}{
		{"", 15}, {"15s", 15}, {"1m30s", 90}, {"2m", 120}, {"500ms", 1}, {"1h", 3600}, {"1.5m", 90}, {"45s", 45},
	} {
		vals := minimal(t)
		if tc.timeout != "" {
			vals = minimal(t, "config.server.shutdownTimeout", tc.timeout)
		}
		g := render(t, vals).Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil || *g <= tc.secs {
			t.Errorf("shutdownTimeout %q: terminationGracePeriodSeconds %v, want > %d", tc.timeout, g, tc.secs)
		}
		if g != nil && *g > tc.secs+60 {
			t.Errorf("shutdownTimeout %q: terminationGracePeriodSeconds %d, far more than needed", tc.timeout, *g)
		}
	}
}

// TestEmbeddedMonitoring: the PrometheusRule's spec is the chart's rule file,
// and the dashboard ConfigMap holds the chart's dashboard, both unchanged.
func TestEmbeddedMonitoring(t *testing.T) {
	o := render(t, allOn(t))

	rules, err := os.ReadFile(ChartDir + "/alerts/extauth-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := yaml.Unmarshal(rules, &want); err != nil {
		t.Fatalf("alerts/extauth-rules.yaml: %v", err)
	}
	for _, d := range o.Docs {
		if d.Kind == "PrometheusRule" {
			var pr struct {
				Spec any `json:"spec"`
			}
			if err := yaml.Unmarshal(d.YAML, &pr); err != nil {
				t.Fatal(err)
			}
			got = pr.Spec
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PrometheusRule spec differs from alerts/extauth-rules.yaml")
	}
	if len(o.PrometheusRule.Spec.Groups) == 0 || len(o.PrometheusRule.Spec.Groups[0].Rules) == 0 {
		t.Error("PrometheusRule has no rules")
	}

	dash, err := os.ReadFile(ChartDir + "/dashboards/extauth.json")
	if err != nil {
		t.Fatal(err)
	}
	cm := o.ConfigMaps["extauth-main-dashboard"]
	if cm.Labels["grafana_dashboard"] != "1" || cm.Labels["example.com/team"] != "sre" || cm.Annotations["grafana_folder"] != "Auth" {
		t.Errorf("dashboard ConfigMap labels %v annotations %v", cm.Labels, cm.Annotations)
	}
	data := cm.Data["extauth.json"]
	if strings.TrimSpace(data) != strings.TrimSpace(string(dash)) {
		t.Error("the dashboard ConfigMap's extauth.json differs from dashboards/extauth.json")
	}
	if !json.Valid([]byte(data)) {
		t.Error("the dashboard ConfigMap's extauth.json is not JSON")
	}
}

func TestNetworkPolicy(t *testing.T) {
	np := render(t, minimal(t, "networkPolicy.enabled", true)).NetworkPolicy
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
	}
	ingress := map[string]int{} // port → index
	for i, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			ingress[p.Port.String()] = i
		}
	}
	http, ok1 := ingress["http"]
	metrics, ok2 := ingress["metrics"]
	if !ok1 || !ok2 || http == metrics {
		t.Fatalf("ingress rules %+v, want one for http and one for metrics", np.Spec.Ingress)
	}
	// 4180 from every namespace (in-cluster), 9090 from the monitoring namespace.
	if from := np.Spec.Ingress[http].From; len(from) != 1 || from[0].NamespaceSelector == nil ||
		len(from[0].NamespaceSelector.MatchLabels)+len(from[0].NamespaceSelector.MatchExpressions) != 0 {
		t.Errorf("http ingress from %+v, want every namespace", from)
	}
	if from := np.Spec.Ingress[metrics].From; len(from) != 1 || from[0].NamespaceSelector == nil ||
		from[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("metrics ingress from %+v, want the monitoring namespace", from)
	}
	egressPorts := map[string]bool{}
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			egressPorts[string(*p.Protocol)+"/"+p.Port.String()] = true
		}
	}
	for _, p := range []string{"UDP/53", "TCP/53", "TCP/443"} {
		if !egressPorts[p] {
			t.Errorf("no egress to %s: %v", p, egressPorts)
		}
	}

	all := render(t, allOn(t)).NetworkPolicy
	var sawExtra, sawProviderTo bool
	for _, r := range all.Spec.Egress {
		for _, p := range r.Ports {
			if p.Port.IntValue() == 4317 && len(r.To) == 1 && r.To[0].PodSelector != nil {
				sawExtra = true
			}
			if p.Port.IntValue() == 8443 && len(r.To) == 1 && r.To[0].IPBlock != nil && r.To[0].IPBlock.CIDR == "203.0.113.0/24" {
				sawProviderTo = true
			}
		}
	}
	if !sawExtra || !sawProviderTo {
		t.Errorf("egress.extra applied %v, providerTo applied %v: %+v", sawExtra, sawProviderTo, all.Spec.Egress)
	}
}

func TestExistingSecret(t *testing.T) {
	o := render(t, minimal(t, "existingSecret", "my-secret", "secrets.clientSecret", "ignored"))
	if o.Secret != nil {
		t.Error("the chart renders a Secret though existingSecret is set")
	}
	var vol *corev1.Volume
	for i, v := range o.Deployment.Spec.Template.Spec.Volumes {
		if v.Name == "secrets" {
			vol = &o.Deployment.Spec.Template.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "my-secret" {
		t.Fatalf("secrets volume %+v, want Secret my-secret", vol)
	}
	if strings.Contains(o.Notes, "WARNING") {
		t.Errorf("NOTES warn though existingSecret is set:\n%s", o.Notes)
	}
	if !strings.Contains(o.Notes, "rollout restart") {
		t.Error("NOTES do not say how to roll the pods after changing the existing Secret")
	}
}

// TestTemplateFailures: values that cannot work stop the render with a
// message naming the value.
func TestTemplateFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"no issuer", minimal(t, "config.oidc.issuerURL", ""), "config.oidc.issuerURL is required"},
		{"no client ID", minimal(t, "config.oidc.clientID", ""), "config.oidc.clientID is required"},
		{"inline client secret", minimal(t, "config.oidc.clientSecret", "s3cr3t"), "secrets.clientSecret"},
		{"client secret file", minimal(t, "config.oidc.clientSecretFile", "/x"), "secrets.clientSecret"},
		{"inline session secrets", minimal(t, "config.session.secrets", []any{"abc"}), "secrets.sessionSecrets"},
		{"session secrets file", minimal(t, "config.session.secretsFile", "/x"), "secrets.sessionSecrets"},
		{"another address", minimal(t, "config.server.address", ":8080"), "config.server.address"},
		{"another metrics address", minimal(t, "config.server.metricsAddress", ":9091"), "config.server.metricsAddress"},
		{"ingress without hosts", minimal(t, "ingress.enabled", true), "ingress.hosts"},
		{"httpRoute without parentRefs", minimal(t, "httpRoute.enabled", true), "httpRoute.parentRefs"},
		{"redis without address", minimal(t, "redis.enabled", true), "redis.address is required"},
		{"redis session store while off", minimal(t, "redis.sessionStore", true, "redis.address", "redis:6379"), "redis.sessionStore"},
		{"redis password in config", minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "config.session.redis.password", "x"), "config.session.redis.password"},
		{"redis in config", minimal(t, "config.session.redis.enabled", true), "config.session.redis.enabled"},
		{"store in config", minimal(t, "config.session.store", "redis"), "config.session.store"},
		{"store in config disagrees", minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "config.session.store", "redis"), "config.session.store"},
		{"redis TLS keys without TLS", minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "redis.tls.caSecret", "ca"), "redis.tls.enabled"},
		{"sentinels without master", minimal(t, "redis.enabled", true, "redis.address", "redis:6379", "redis.sentinel.addresses", []any{"s:26379"}), "redis.sentinel.masterName"},
		{"master without sentinels", minimal(t, "redis.enabled", true, "redis.sentinel.masterName", "mymaster"), "redis.sentinel.addresses"},
		{"redis password with existingSecret", minimal(t, "existingSecret", "mine", "redis.enabled", true, "redis.address", "redis:6379", "redis.password", "x"), "redis.existingSecret"},
		{"sentinel password with existingSecret", minimal(t, "existingSecret", "mine", "redis.enabled", true, "redis.sentinel.masterName", "m",
			"redis.sentinel.addresses", []any{"s:26379"}, "redis.sentinel.password", "x"), "redis.existingSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir, tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one naming %q", err, tc.want)
			}
		})
	}
	// The values the chart would set anyway are accepted.
	for _, vals := range []map[string]any{
		minimal(t, "config.server.address", ":4180"),
		minimal(t, "config.session.store", "cookie"),
		minimal(t, "config.session.store", "redis", "redis.enabled", true, "redis.sessionStore", true, "redis.address", "redis:6379"),
	} {
		if _, err := Render(ChartDir, vals); err != nil {
			t.Errorf("%v: %v", vals, err)
		}
	}
}

// notesAnnotation is the value NOTES give an annotation.
func notesAnnotation(notes, key string) (string, bool) {
	for _, line := range strings.Split(notes, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+": "); ok {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

func TestNotes(t *testing.T) {
	o := render(t, minimal(t))
	for _, line := range []string{
		`nginx.ingress.kubernetes.io/auth-url: "http://extauth.auth.svc.cluster.local:4180/oauth2/auth"`,
		`nginx.ingress.kubernetes.io/auth-signin: "https://$host/oauth2/start?rd=$escaped_request_uri"`,
		`nginx.ingress.kubernetes.io/auth-response-headers: "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Preferred-Username,X-Auth-Request-Groups,X-Auth-Request-Access-Token"`,
		`nginx.ingress.kubernetes.io/auth-always-set-cookie: "true"`,
		`nginx.ingress.kubernetes.io/proxy-buffer-size: "16k"`,
	} {
		if !strings.Contains(o.Notes, line) {
			t.Errorf("NOTES lack %s", line)
		}
	}
	// The same annotations as SPEC.md, where it is beside the repository.
	for _, a := range specAnnotations(t) {
		var want string
		if err := yaml.Unmarshal([]byte(a.quoted), &want); err != nil {
			t.Fatal(err)
		}
		got, ok := notesAnnotation(o.Notes, a.key)
		if !ok || !annotationMatches(a.key, got, want, identityHeaders) {
			t.Errorf("NOTES lack SPEC.md's %s: %s", a.key, a.quoted)
		}
	}
	if !strings.Contains(o.Notes, "WARNING: no session secret") {
		t.Errorf("NOTES do not warn about the missing session secret:\n%s", o.Notes)
	}
	if n := render(t, allOn(t)).Notes; strings.Contains(n, "WARNING") ||
		!strings.Contains(n, "http://extauth-main.auth.svc.cluster.example:4180/oauth2/auth") {
		t.Errorf("all-on NOTES:\n%s", n)
	}
}
