package charttest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// TestManifestUpToDate: manifests/extauth.yaml is what `make manifests`
// writes from the chart today.
func TestManifestUpToDate(t *testing.T) {
	want, err := Manifest(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(ManifestPath)
	if err != nil {
		t.Fatalf("%v (run `make manifests`)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run `make manifests` (cd charts/test && go run ./cmd/render)", ManifestPath)
	}
	// And it holds what a cluster needs, no Secret (it carries none).
	docs, err := SplitDocs(got)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, d := range docs {
		kinds = append(kinds, d.Kind)
	}
	slices.Sort(kinds)
	if want := []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"}; !slices.Equal(kinds, want) {
		t.Errorf("manifests/extauth.yaml has %v, want %v", kinds, want)
	}
}

// targetRef is a policy's target (Gateway API PolicyTargetReference).
type targetRef struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// Strictly decoded shapes of the CRDs in the examples, with the fields they
// use, so that a misspelt key fails here rather than in a cluster.
type (
	securityPolicy struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			TargetRefs []targetRef `json:"targetRefs"`
			ExtAuth    struct {
				FailOpen         *bool    `json:"failOpen"`
				HeadersToExtAuth []string `json:"headersToExtAuth"`
				HTTP             struct {
					BackendRefs []struct {
						Name      string `json:"name"`
						Namespace string `json:"namespace"`
						Port      int    `json:"port"`
					} `json:"backendRefs"`
					Path             string   `json:"path"`
					HeadersToBackend []string `json:"headersToBackend"`
				} `json:"http"`
			} `json:"extAuth"`
		} `json:"spec"`
	}
	clientTrafficPolicy struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			TargetRefs []targetRef `json:"targetRefs"`
			Headers    struct {
				EarlyRequestHeaders struct {
					Remove []string `json:"remove"`
				} `json:"earlyRequestHeaders"`
			} `json:"headers"`
		} `json:"spec"`
	}
	referenceGrant struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			From []struct {
				Group     string `json:"group"`
				Kind      string `json:"kind"`
				Namespace string `json:"namespace"`
			} `json:"from"`
			To []struct {
				Group string `json:"group"`
				Kind  string `json:"kind"`
				Name  string `json:"name"`
			} `json:"to"`
		} `json:"spec"`
	}
	traefikMiddleware struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			ForwardAuth struct {
				Address                  string   `json:"address"`
				TrustForwardHeader       *bool    `json:"trustForwardHeader"`
				AuthResponseHeaders      []string `json:"authResponseHeaders"`
				AuthResponseHeadersRegex string   `json:"authResponseHeadersRegex"`
				AddAuthCookiesToResponse []string `json:"addAuthCookiesToResponse"`
			} `json:"forwardAuth"`
		} `json:"spec"`
	}
	ingressRoute struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			EntryPoints []string `json:"entryPoints"`
			Routes      []struct {
				Match       string `json:"match"`
				Kind        string `json:"kind"`
				Middlewares []struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"middlewares"`
				Services []struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
					Port      int    `json:"port"`
				} `json:"services"`
			} `json:"routes"`
			TLS *struct {
				SecretName string `json:"secretName"`
			} `json:"tls"`
		} `json:"spec"`
	}
)

// readExample splits an example file into its documents.
func readExample(t *testing.T, name string) []Doc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ExamplesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := SplitDocs(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no documents", name)
	}
	return docs
}

// TestExamplesParse: every document of every example is a Kubernetes object
// and decodes strictly into its type.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(ExamplesDir, "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("examples %v (%v), want at least 3", files, err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		for i, d := range readExample(t, name) {
			what := fmt.Sprintf("%s document %d (%s %s)", name, i+1, d.Kind, d.Name)
			var tm struct {
				metav1.TypeMeta `json:",inline"`
				Metadata        metav1.ObjectMeta `json:"metadata"`
			}
			if err := yaml.Unmarshal(d.YAML, &tm); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if tm.APIVersion == "" || tm.Kind == "" || tm.Metadata.Name == "" || tm.Metadata.Namespace == "" {
				t.Errorf("%s: apiVersion, kind, metadata.name and metadata.namespace are required", what)
			}
			var v any
			switch tm.APIVersion + " " + tm.Kind {
			case "networking.k8s.io/v1 Ingress":
				v = &networkingv1.Ingress{}
			case "gateway.networking.k8s.io/v1 HTTPRoute":
				v = &httpRoute{}
			case "gateway.networking.k8s.io/v1beta1 ReferenceGrant":
				v = &referenceGrant{}
			case "gateway.envoyproxy.io/v1alpha1 SecurityPolicy":
				v = &securityPolicy{}
			case "gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy":
				v = &clientTrafficPolicy{}
			case "traefik.io/v1alpha1 Middleware":
				v = &traefikMiddleware{}
			case "traefik.io/v1alpha1 IngressRoute":
				v = &ingressRoute{}
			default:
				t.Errorf("%s: unexpected %s %s", what, tm.APIVersion, tm.Kind)
				continue
			}
			decodeStrict(t, what, d.YAML, v)
		}
	}
}

type annotation struct{ key, quoted string }

// specAnnotations are the ingress-nginx annotations of SPEC.md ("With
// ingress-nginx, a protected Ingress carries:"), read from ../shared beside
// the repository where it is, else the ones it said when this was written.
func specAnnotations(t *testing.T) []annotation {
	t.Helper()
	fallback := []annotation{
		{"nginx.ingress.kubernetes.io/auth-url", `"http://extauth.auth.svc.cluster.local:4180/oauth2/auth"`},
		{"nginx.ingress.kubernetes.io/auth-signin", `"https://$host/oauth2/start?rd=$escaped_request_uri"`},
		{"nginx.ingress.kubernetes.io/auth-response-headers", `"X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups"`},
		{"nginx.ingress.kubernetes.io/auth-always-set-cookie", `"true"`},
	}
	spec, err := os.ReadFile("../../../shared/SPEC.md")
	if err != nil {
		t.Logf("SPEC.md not beside the repository (%v): checking the annotations it had", err)
		return fallback
	}
	_, section, ok := strings.Cut(string(spec), "a protected Ingress carries:")
	if !ok {
		t.Fatal("SPEC.md no longer says what a protected Ingress carries")
	}
	var out []annotation
	re := regexp.MustCompile(`(?m)^(nginx\.ingress\.kubernetes\.io/[a-z-]+): (".*")\s*$`)
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		out = append(out, annotation{m[1], m[2]})
	}
	if len(out) < 4 {
		t.Fatalf("SPEC.md's protected-Ingress annotations: found %v", out)
	}
	return out
}

// identityHeaders are every header extauth's check can set but the
// assertion's. A gateway config lists them all, used or not: nginx (and
// ingress-nginx's auth-response-headers) then sends the check's value of
// each, never the client's own.
var identityHeaders = []string{"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username",
	"X-Auth-Request-Groups", "X-Auth-Request-Access-Token"}

// exampleHeaders are what the gateway examples list: the identity headers
// and the assertion's (assertion.header's default), whether it is on or not,
// so that a client's own never reaches the app. NOTES list the assertion's
// only when it is on.
var exampleHeaders = append(slices.Clone(identityHeaders), "X-Auth-Request-Jwt")

// annotationMatches compares an annotation with SPEC.md's value; the
// auth-response-headers list may name more headers than SPEC.md's, and must
// name every one of headers.
func annotationMatches(key, got, want string, headers []string) bool {
	if key != "nginx.ingress.kubernetes.io/auth-response-headers" {
		return got == want
	}
	listed := strings.Split(got, ",")
	for _, h := range append(strings.Split(want, ","), headers...) {
		if !slices.Contains(listed, h) {
			return false
		}
	}
	return true
}

// TestProtectedIngressAnnotations: every example Ingress with an auth-url
// carries SPEC.md's annotations with SPEC.md's values (the Service
// extauth.auth, as manifests/extauth.yaml deploys it).
func TestProtectedIngressAnnotations(t *testing.T) {
	want := specAnnotations(t)
	files, _ := filepath.Glob(filepath.Join(ExamplesDir, "*.yaml"))
	protected := 0
	for _, f := range files {
		for _, d := range readExample(t, filepath.Base(f)) {
			if d.Kind != "Ingress" {
				continue
			}
			var ing networkingv1.Ingress
			decodeStrict(t, f, d.YAML, &ing)
			if _, ok := ing.Annotations["nginx.ingress.kubernetes.io/auth-url"]; !ok {
				continue
			}
			protected++
			for _, a := range want {
				var v string
				if err := yaml.Unmarshal([]byte(a.quoted), &v); err != nil {
					t.Fatal(err)
				}
				if got, ok := ing.Annotations[a.key]; !ok || !annotationMatches(a.key, got, v, exampleHeaders) {
					t.Errorf("%s: Ingress %s: %s = %q, want %q", filepath.Base(f), ing.Name, a.key, got, v)
				}
			}
		}
	}
	if protected == 0 {
		t.Error("no protected Ingress (with auth-url) in the examples")
	}

	// The second Ingress routes /oauth2 of the protected host to extauth.
	var routed bool
	for _, d := range readExample(t, "ingress-nginx.yaml") {
		var ing networkingv1.Ingress
		decodeStrict(t, "ingress-nginx.yaml", d.YAML, &ing)
		if _, ok := ing.Annotations["nginx.ingress.kubernetes.io/auth-url"]; ok {
			continue
		}
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				if p.Path == "/oauth2" && p.Backend.Service != nil && p.Backend.Service.Name == "extauth" && ing.Namespace == "auth" {
					routed = true
				}
			}
		}
	}
	if !routed {
		t.Error("ingress-nginx.yaml: no Ingress routes /oauth2 to extauth")
	}
}

func TestEnvoyGatewayExample(t *testing.T) {
	var policy *securityPolicy
	var strip *clientTrafficPolicy
	routes := map[string]*httpRoute{}
	for _, d := range readExample(t, "envoy-gateway.yaml") {
		switch d.Kind {
		case "SecurityPolicy":
			decodeStrict(t, d.Kind, d.YAML, &policy)
		case "ClientTrafficPolicy":
			decodeStrict(t, d.Kind, d.YAML, &strip)
		case "HTTPRoute":
			var r *httpRoute
			decodeStrict(t, d.Kind, d.YAML, &r)
			routes[r.Metadata.Name] = r
		}
	}
	if policy == nil {
		t.Fatal("no SecurityPolicy")
	}
	ea := policy.Spec.ExtAuth
	if ea.HTTP.Path != "/oauth2/ext-authz" || len(ea.HTTP.BackendRefs) != 1 || ea.HTTP.BackendRefs[0].Name != "extauth" ||
		ea.HTTP.BackendRefs[0].Namespace != "auth" || ea.HTTP.BackendRefs[0].Port != 4180 {
		t.Errorf("extAuth.http %+v, want the extauth Service at /oauth2/ext-authz", ea.HTTP)
	}
	if !slices.Contains(ea.HeadersToExtAuth, "cookie") {
		t.Errorf("headersToExtAuth %v lacks cookie: the session would never reach extauth", ea.HeadersToExtAuth)
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Error("failOpen must be false")
	}
	// Every identity header goes to the app from extauth's answer, and a
	// client's own is removed before the check.
	if strip == nil || len(strip.Spec.TargetRefs) != 1 || strip.Spec.TargetRefs[0].Kind != "Gateway" {
		t.Fatal("no ClientTrafficPolicy on the Gateway strips the identity headers")
	}
	for _, h := range exampleHeaders {
		if !slices.Contains(ea.HTTP.HeadersToBackend, strings.ToLower(h)) {
			t.Errorf("headersToBackend lacks %s", h)
		}
		if !slices.Contains(strip.Spec.Headers.EarlyRequestHeaders.Remove, h) {
			t.Errorf("the ClientTrafficPolicy does not remove %s", h)
		}
	}
	if len(policy.Spec.TargetRefs) != 1 || policy.Spec.TargetRefs[0].Kind != "HTTPRoute" || routes[policy.Spec.TargetRefs[0].Name] == nil {
		t.Errorf("the SecurityPolicy targets %+v, not an HTTPRoute of the example", policy.Spec.TargetRefs)
	}
	oauth := routes["extauth"]
	if oauth == nil || oauth.Metadata.Namespace != "auth" || oauth.Spec.Rules[0].Matches[0].Path.Value != "/oauth2" {
		t.Error("no HTTPRoute for /oauth2 to extauth outside the SecurityPolicy")
	}
}

func TestTraefikExample(t *testing.T) {
	var mw *traefikMiddleware
	var routes []*ingressRoute
	for _, d := range readExample(t, "traefik.yaml") {
		switch d.Kind {
		case "Middleware":
			decodeStrict(t, d.Kind, d.YAML, &mw)
		case "IngressRoute":
			var r *ingressRoute
			decodeStrict(t, d.Kind, d.YAML, &r)
			routes = append(routes, r)
		}
	}
	if mw == nil {
		t.Fatal("no Middleware")
	}
	fa := mw.Spec.ForwardAuth
	if !regexp.MustCompile(`^http://extauth\.[a-z0-9-]+\.svc:4180/oauth2/forward-auth$`).MatchString(fa.Address) {
		t.Errorf("forwardAuth.address %q, want http://extauth.<ns>.svc:4180/oauth2/forward-auth", fa.Address)
	}
	if !slices.Equal(fa.AddAuthCookiesToResponse, []string{"_extauth"}) || fa.TrustForwardHeader == nil {
		t.Errorf("forwardAuth %+v", fa)
	}
	// Traefik strips the request's headers that authResponseHeadersRegex
	// matches before copying the answer's: it must match every identity
	// header, so that none of a client's own gets through.
	re, err := regexp.Compile(fa.AuthResponseHeadersRegex)
	if err != nil || fa.AuthResponseHeadersRegex == "" {
		t.Fatalf("forwardAuth.authResponseHeadersRegex %q: %v", fa.AuthResponseHeadersRegex, err)
	}
	for _, h := range exampleHeaders {
		if !re.MatchString(h) {
			t.Errorf("authResponseHeadersRegex %q does not match %s", fa.AuthResponseHeadersRegex, h)
		}
	}
	if re.MatchString("Cookie") || re.MatchString("Authorization") {
		t.Errorf("authResponseHeadersRegex %q matches more than the identity headers", fa.AuthResponseHeadersRegex)
	}
	var protected, oauth bool
	for _, r := range routes {
		for _, rt := range r.Spec.Routes {
			if len(rt.Middlewares) == 1 && rt.Middlewares[0].Name == mw.Metadata.Name && r.Metadata.Namespace == mw.Metadata.Namespace {
				protected = true
			}
			if strings.Contains(rt.Match, "PathPrefix(`/oauth2`)") && len(rt.Middlewares) == 0 && rt.Services[0].Name == "extauth" {
				oauth = true
			}
		}
	}
	if !protected || !oauth {
		t.Errorf("IngressRoutes: one through the middleware %v, /oauth2 to extauth without it %v", protected, oauth)
	}
}

// TestNginxGatewayFabricExample: the ExternalAuth filter sends extauth the
// cookie and not Accept (a redirect from the check would be a 500), and
// sets every identity header from extauth's answer (nginx auth_request_set:
// a client's own copy never reaches the app) and the refreshed Set-Cookie.
func TestNginxGatewayFabricExample(t *testing.T) {
	var app, oauth *httpRoute
	for _, d := range readExample(t, "nginx-gateway-fabric.yaml") {
		if d.Kind != "HTTPRoute" {
			continue
		}
		var r *httpRoute
		decodeStrict(t, d.Kind, d.YAML, &r)
		switch r.Metadata.Name {
		case "app":
			app = r
		case "extauth":
			oauth = r
		}
		for _, rule := range r.Spec.Rules {
			for _, m := range rule.Matches {
				if m.Path.Value == "/oauth2/" && len(rule.BackendRefs) == 1 && rule.BackendRefs[0].Name == "extauth" {
					oauth = r
				}
			}
		}
	}
	if app == nil {
		t.Fatal("no HTTPRoute app")
	}
	if oauth == nil {
		t.Error("no route of /oauth2/ to extauth")
	}
	var filters int
	for _, rule := range app.Spec.Rules {
		for _, f := range rule.Filters {
			if f.Type != "ExternalAuth" || f.ExternalAuth == nil {
				continue
			}
			filters++
			ea := f.ExternalAuth
			if ea.BackendRef.Name != "extauth" || ea.BackendRef.Port != 4180 || ea.HTTP.Path != "/oauth2/ext-authz" {
				t.Errorf("ExternalAuth %+v, want the extauth Service at /oauth2/ext-authz", ea)
			}
			if !slices.Contains(ea.HTTP.AllowedHeaders, "cookie") || slices.ContainsFunc(ea.HTTP.AllowedHeaders, func(h string) bool {
				return strings.EqualFold(h, "accept")
			}) {
				t.Errorf("allowedHeaders %v: want cookie, and not accept", ea.HTTP.AllowedHeaders)
			}
			for _, h := range append(slices.Clone(exampleHeaders), "Set-Cookie") {
				if !slices.Contains(ea.HTTP.AllowedResponseHeaders, h) {
					t.Errorf("allowedResponseHeaders lacks %s", h)
				}
			}
		}
	}
	if filters != 1 {
		t.Errorf("%d ExternalAuth filters on the app's route, want 1", filters)
	}
}
