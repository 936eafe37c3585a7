package charttest

import (
	"maps"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/extauth/extauth/pkg/assertion"
)

// objects are the chart's rendered objects, each decoded strictly into its
// Kubernetes type (or, for CRDs, into the local types below).
type objects struct {
	Docs           []Doc
	Notes          string
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	ConfigMaps     map[string]*corev1.ConfigMap
	Secret         *corev1.Secret
	ServiceAccount *corev1.ServiceAccount
	Ingress        *networkingv1.Ingress
	NetworkPolicy  *networkingv1.NetworkPolicy
	PDB            *policyv1.PodDisruptionBudget
	HPA            *autoscalingv2.HorizontalPodAutoscaler
	ServiceMonitor *serviceMonitor
	PrometheusRule *prometheusRule
	HTTPRoute      *httpRoute
}

// The prometheus-operator and Gateway API kinds, with the fields the chart
// writes (and, for rules, every field a PrometheusRule allows), so that
// strict decoding catches a misspelt or misplaced key.
type (
	serviceMonitor struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			Selector          metav1.LabelSelector `json:"selector"`
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Endpoints []struct {
				Port          string `json:"port"`
				Path          string `json:"path"`
				Interval      string `json:"interval"`
				ScrapeTimeout string `json:"scrapeTimeout"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	prometheusRule struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            ruleFile          `json:"spec"`
	}
	ruleFile struct {
		Groups []struct {
			Name                    string            `json:"name"`
			Interval                string            `json:"interval"`
			QueryOffset             string            `json:"query_offset"`
			Limit                   int               `json:"limit"`
			Labels                  map[string]string `json:"labels"`
			PartialResponseStrategy string            `json:"partial_response_strategy"`
			Rules                   []struct {
				Alert         string            `json:"alert"`
				Record        string            `json:"record"`
				Expr          string            `json:"expr"`
				For           string            `json:"for"`
				KeepFiringFor string            `json:"keep_firing_for"`
				Labels        map[string]string `json:"labels"`
				Annotations   map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	httpRoute struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			ParentRefs []struct {
				Group       string `json:"group"`
				Kind        string `json:"kind"`
				Namespace   string `json:"namespace"`
				Name        string `json:"name"`
				SectionName string `json:"sectionName"`
				Port        int    `json:"port"`
			} `json:"parentRefs"`
			Hostnames []string `json:"hostnames"`
			Rules     []struct {
				Matches []struct {
					Path struct {
						Type  string `json:"type"`
						Value string `json:"value"`
					} `json:"path"`
				} `json:"matches"`
				// Filters: the Gateway API ExternalAuth filter (GEP-1494),
				// as far as the examples use it.
				Filters []struct {
					Type         string `json:"type"`
					ExternalAuth *struct {
						Protocol   string `json:"protocol"`
						BackendRef struct {
							Name      string `json:"name"`
							Namespace string `json:"namespace"`
							Port      int    `json:"port"`
						} `json:"backendRef"`
						HTTP struct {
							Path                   string   `json:"path"`
							AllowedHeaders         []string `json:"allowedHeaders"`
							AllowedResponseHeaders []string `json:"allowedResponseHeaders"`
						} `json:"http"`
					} `json:"externalAuth"`
				} `json:"filters"`
				BackendRefs []struct {
					Group     string `json:"group"`
					Kind      string `json:"kind"`
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
					Port      int    `json:"port"`
					Weight    *int   `json:"weight"`
				} `json:"backendRefs"`
			} `json:"rules"`
		} `json:"spec"`
	}
)

// decodeStrict decodes YAML into v, rejecting unknown and duplicate fields.
func decodeStrict(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: strict decode into %T: %v\n%s", what, v, err, data)
	}
}

// render renders the chart with values (over its defaults) and decodes every
// object; a kind the tests do not know, or a second object of a kind that
// should be unique, fails the test.
func render(t *testing.T, values map[string]any) *objects {
	t.Helper()
	rel, err := Render(ChartDir, values)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	docs, err := SplitDocs([]byte(rel.Manifest))
	if err != nil {
		t.Fatalf("split manifest: %v", err)
	}
	o := &objects{Docs: docs, Notes: rel.Notes, ConfigMaps: map[string]*corev1.ConfigMap{}}
	for _, d := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(d.YAML, &tm); err != nil {
			t.Fatalf("%s: %v", d.Source, err)
		}
		what := d.Source + " (" + d.Kind + " " + d.Name + ")"
		one := func(dst any, isSet bool, apiVersion string) {
			t.Helper()
			if tm.APIVersion != apiVersion {
				t.Errorf("%s: apiVersion %q, want %q", what, tm.APIVersion, apiVersion)
			}
			if isSet {
				t.Errorf("%s: a second %s", what, d.Kind)
			}
			decodeStrict(t, what, d.YAML, dst)
		}
		switch d.Kind {
		case "Deployment":
			one(&o.Deployment, o.Deployment != nil, "apps/v1")
		case "Service":
			one(&o.Service, o.Service != nil, "v1")
		case "Secret":
			one(&o.Secret, o.Secret != nil, "v1")
		case "ServiceAccount":
			one(&o.ServiceAccount, o.ServiceAccount != nil, "v1")
		case "Ingress":
			one(&o.Ingress, o.Ingress != nil, "networking.k8s.io/v1")
		case "NetworkPolicy":
			one(&o.NetworkPolicy, o.NetworkPolicy != nil, "networking.k8s.io/v1")
		case "PodDisruptionBudget":
			one(&o.PDB, o.PDB != nil, "policy/v1")
		case "HorizontalPodAutoscaler":
			one(&o.HPA, o.HPA != nil, "autoscaling/v2")
		case "ServiceMonitor":
			one(&o.ServiceMonitor, o.ServiceMonitor != nil, "monitoring.coreos.com/v1")
		case "PrometheusRule":
			one(&o.PrometheusRule, o.PrometheusRule != nil, "monitoring.coreos.com/v1")
		case "HTTPRoute":
			one(&o.HTTPRoute, o.HTTPRoute != nil, "gateway.networking.k8s.io/v1")
		case "ConfigMap":
			var cm *corev1.ConfigMap
			one(&cm, o.ConfigMaps[d.Name] != nil, "v1")
			o.ConfigMaps[d.Name] = cm
		default:
			t.Errorf("%s: unexpected kind %q", d.Source, d.Kind)
		}
		if d.Name == "" {
			t.Errorf("%s: no metadata.name", what)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

// values reads the given testdata values files and applies overrides, each a
// dotted path and its value ("config.logging.level", "debug").
func values(t *testing.T, files []string, overrides ...any) map[string]any {
	t.Helper()
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = "testdata/" + f
	}
	v, err := ReadValues(paths...)
	if err != nil {
		t.Fatal(err)
	}
	if len(overrides)%2 != 0 {
		t.Fatal("overrides come in path, value pairs")
	}
	for i := 0; i < len(overrides); i += 2 {
		setPath(v, overrides[i].(string), overrides[i+1])
	}
	return v
}

// setPath sets a dotted path in a values tree, copying the maps on the way so
// that shared trees are not changed.
func setPath(m map[string]any, path string, value any) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, _ := m[k].(map[string]any)
		next = maps.Clone(next)
		if next == nil {
			next = map[string]any{}
		}
		m[k] = next
		m = next
	}
	m[keys[len(keys)-1]] = value
}

func minimal(t *testing.T, overrides ...any) map[string]any {
	t.Helper()
	return values(t, []string{"minimal.yaml"}, overrides...)
}

// allOn: all-on.yaml, with the assertion's keys (all-on.yaml turns it on;
// extauth parses the keys, so they are real ones, made once per run rather
// than committed), then overrides.
func allOn(t *testing.T, overrides ...any) map[string]any {
	t.Helper()
	keys, err := allOnAssertionKeys()
	if err != nil {
		t.Fatal(err)
	}
	return values(t, []string{"all-on.yaml"},
		append([]any{"secrets.assertionKey", keys[0], "secrets.assertionPreviousKeys", []any{keys[1]}}, overrides...)...)
}

var allOnAssertionKeys = sync.OnceValues(func() ([]string, error) {
	var keys []string
	for range 2 {
		k, err := assertion.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		keys = append(keys, string(k))
	}
	return keys, nil
})

// container is the Deployment's one container.
func (o *objects) container(t *testing.T) corev1.Container {
	t.Helper()
	if o.Deployment == nil {
		t.Fatal("no Deployment")
	}
	cs := o.Deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	return cs[0]
}
