package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/server"
)

const (
	dashboardPath = "charts/extauth/dashboards/extauth.json"
	alertsPath    = "charts/extauth/alerts/extauth-rules.yaml"
	metricsSource = "pkg/metrics/metrics.go"
)

// notScraped lists the metric names the dashboard and alerts may use although
// the running service did not expose them in this test, each with its reason.
// Every other name must appear in the scrape.
var notScraped = map[string]struct {
	alertsOnly bool
	reason     string
}{
	// Prometheus writes up for every target; the service cannot export it.
	"up": {alertsOnly: true, reason: "written by Prometheus for every scrape target"},
	// An extauth_* name may be listed when it is declared in pkg/metrics but
	// the flow below does not create it (a *Vec without children is not
	// exposed); the test checks the declaration and logs once it shows up.
}

// wantAlerts are the alerts the rule file must keep.
var wantAlerts = []string{
	"ExtauthProviderErrors",
	"ExtauthProviderUnavailable",
	"ExtauthRefreshInvalidGrantSpike",
	"ExtauthCallbackFailures",
	"ExtauthCheckErrors",
	"ExtauthCheckLatencyHigh",
	"ExtauthNoReadyReplica",
}

// TestDashboardAndAlertsUseExportedMetrics runs extauth against the fake
// provider, drives a sign-in, a check, userinfo and a sign-out, scrapes
// /metrics, and checks that every metric the Grafana dashboard and the
// Prometheus alerts query is one the service exports, that every query
// parses as PromQL, and the shape both files promise (datasource variable,
// namespace/pod filters, severity and annotations of every alert).
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	root := testenv.RepoRoot(t)
	exported := exportedMetricNames(t)
	for _, name := range []string{"extauth_auth_requests_total", "extauth_build_info", "go_goroutines", "process_resident_memory_bytes"} {
		if !exported[name] {
			t.Fatalf("the scrape lacks %s; exported: %v", name, slices.Sorted(maps.Keys(exported)))
		}
	}

	// Names on the allow list must still be declared, or the list would
	// hide a typo; and the ones the service now exports should leave it.
	declared := readFile(t, root, metricsSource)
	for name := range notScraped {
		if exported[name] {
			t.Logf("%s is exported now: remove it from notScraped", name)
		}
		if strings.HasPrefix(name, "extauth_") && !strings.Contains(declared, `"`+name+`"`) {
			t.Errorf("notScraped names %s, which %s does not declare", name, metricsSource)
		}
	}

	p := parser.NewParser(parser.Options{})
	check := func(where, expr string, alert, dashboard bool) {
		t.Helper()
		ast, err := p.ParseExpr(expr)
		if err != nil {
			t.Errorf("%s: PromQL does not parse: %v\n%s", where, err, expr)
			return
		}
		selectors := 0
		parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			selectors++
			name := metricName(vs)
			switch allowed, listed := notScraped[name]; {
			case name == "":
				t.Errorf("%s: selector %s names no metric", where, vs)
			case exported[name]:
			case listed && (alert || !allowed.alertsOnly):
			default:
				t.Errorf("%s: metric %q is not exported by extauth (selector %s)", where, name, vs)
			}
			if dashboard && !(hasRegexMatcher(vs, "namespace") && hasRegexMatcher(vs, "pod")) {
				t.Errorf("%s: selector %s lacks namespace=~\"$namespace\", pod=~\"$pod\"", where, vs)
			}
			return nil
		})
		if selectors == 0 {
			t.Errorf("%s: no metric selector in %s", where, expr)
		}
	}

	// The dashboard.
	var dash map[string]any
	if err := json.Unmarshal([]byte(readFile(t, root, dashboardPath)), &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	exprs := 0
	forEachPanel(dash, func(panel map[string]any) {
		title, _ := panel["title"].(string)
		targets, _ := panel["targets"].([]any)
		for i, tg := range targets {
			target, _ := tg.(map[string]any)
			expr, _ := target["expr"].(string)
			if expr == "" {
				continue
			}
			exprs++
			check(fmt.Sprintf("dashboard panel %q target %d", title, i), grafanaToPromQL(expr), false, true)
		}
	})
	if exprs == 0 {
		t.Errorf("%s: no panel queries found", dashboardPath)
	}
	vars := map[string]map[string]any{}
	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		variable, _ := v.(map[string]any)
		name, _ := variable["name"].(string)
		vars[name] = variable
		if variable["type"] != "query" {
			continue
		}
		query := variableQuery(variable)
		where := fmt.Sprintf("dashboard variable %q", name)
		if m := labelValuesRE.FindStringSubmatch(query); m != nil {
			check(where, grafanaToPromQL(m[1]), false, false)
		} else if m := queryResultRE.FindStringSubmatch(query); m != nil {
			check(where, grafanaToPromQL(m[1]), false, false)
		} else {
			t.Errorf("%s: query %q is not label_values(metric, label) or query_result(expr)", where, query)
		}
	}
	if v := vars["datasource"]; v == nil || v["type"] != "datasource" || v["query"] != "prometheus" {
		t.Errorf("dashboard: want a datasource variable of type datasource querying prometheus, got %v", v)
	}
	for _, name := range []string{"namespace", "pod"} {
		if v := vars[name]; v == nil || v["type"] != "query" || v["multi"] != true || v["includeAll"] != true {
			t.Errorf("dashboard: want a multi-value query variable %q with All, got %v", name, v)
		}
	}
	walkJSON(dash, "$", func(path string, obj map[string]any) {
		ds, ok := obj["datasource"]
		if !ok {
			return
		}
		switch ds := ds.(type) {
		case map[string]any:
			if uid, ok := ds["uid"]; ok && uid != "${datasource}" {
				t.Errorf("dashboard %s.datasource: uid %v, want ${datasource}", path, uid)
			}
		case string:
			if ds != "${datasource}" && ds != "$datasource" {
				t.Errorf("dashboard %s.datasource: %q, want ${datasource}", path, ds)
			}
		}
	})

	// The alerts: every key known, every expression parsed and its metrics
	// exported, every duration and label/annotation template valid, and the
	// labels and annotations the file promises.
	rules := []byte(readFile(t, root, alertsPath))
	var file struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(rules, &file); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	var alerts []string
	for _, g := range file.Groups {
		for i, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			where := fmt.Sprintf("%s group %q rule %d (%s)", alertsPath, g.Name, i, name)
			check(where, r.Expr, true, false)
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if d, err := model.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("%s: for %q is not a positive Prometheus duration (%v)", where, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			for kind, m := range map[string]map[string]string{"label": r.Labels, "annotation": r.Annotations} {
				for k, text := range m {
					if err := parseAlertTemplate(text); err != nil {
						t.Errorf("%s: %s %s: %v", where, kind, k, err)
					}
				}
			}
		}
	}
	for _, a := range wantAlerts {
		if !slices.Contains(alerts, a) {
			t.Errorf("%s: alert %s is missing", alertsPath, a)
		}
	}
}

// exportedMetricNames starts extauth against the fake provider, exercises
// its endpoints and returns every metric name its /metrics exposes (for a
// histogram family x: x, x_bucket, x_sum and x_count).
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	idp := providertest.New(t, providertest.WithClock(time.Now))
	mainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		mainLn.Close()
		t.Fatal(err)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server:
  address: %q
  metricsAddress: %q
  shutdownTimeout: 5s
oidc:
  issuerURL: %q
  clientID: %q
  clientSecret: %q
session:
  secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
  cookieSecure: false
`, mainLn.Addr(), metricsLn.Addr(), idp.Issuer, idp.ClientID, idp.ClientSecret))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(cfg, logger, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, mainLn, metricsLn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("extauth did not shut down")
		}
	})

	base := "http://" + mainLn.Addr().String()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	get := func(u string, want int) *url.URL {
		t.Helper()
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d\n%s", u, resp.StatusCode, want, body)
		}
		if resp.StatusCode/100 != 3 {
			return nil
		}
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("GET %s: %d without a usable Location: %v", u, resp.StatusCode, err)
		}
		return loc
	}

	if err := testenv.WaitHTTP(t.Context(), base+"/readyz", 15*time.Second, testenv.WantStatus(http.StatusOK)); err != nil {
		t.Fatal(err)
	}

	get(base+"/oauth2/auth", http.StatusUnauthorized)
	authorize := get(base+"/oauth2/start?rd=/", http.StatusFound)
	if !strings.HasPrefix(authorize.String(), idp.Issuer) {
		t.Fatalf("sign-in redirects to %s, not to the provider %s", authorize, idp.Issuer)
	}
	callback := get(authorize.String(), http.StatusFound)
	if !strings.HasPrefix(callback.String(), base+"/oauth2/callback") {
		t.Fatalf("the provider redirects to %s, not to the callback", callback)
	}
	get(callback.String(), http.StatusFound)
	get(base+"/oauth2/auth", http.StatusOK)
	get(base+"/oauth2/userinfo", http.StatusOK)
	get(base+"/oauth2/sign_out", http.StatusFound)
	get(base+"/oauth2/auth", http.StatusUnauthorized)

	families := scrape(t, metricsLn.Addr().String())
	// The flow above must have been counted, or the scrape is not this run's.
	for _, c := range []struct{ family, label, value string }{
		{"extauth_callbacks_total", "result", "success"},
		{"extauth_auth_requests_total", "result", "authenticated"},
		{"extauth_token_revocations_total", "result", "success"},
	} {
		if counterSum(families[c.family], c.label, c.value) < 1 {
			t.Errorf("%s{%s=%q} did not count the flow", c.family, c.label, c.value)
		}
	}

	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

func counterSum(f *dto.MetricFamily, label, value string) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// alertTemplateFuncs are the names of Prometheus's template functions
// (prometheus/template): parsing only needs them to exist. (Prometheus's
// own rulefmt would check this too, but drags client-go into the module.)
var alertTemplateFuncs = func() template.FuncMap {
	fm := template.FuncMap{}
	for _, name := range strings.Fields(`query first label value strvalue args reReplaceAll
		safeHtml match title toUpper toLower graphLink tableLink sortByLabel stripPort
		stripDomain humanize humanize1024 humanizeDuration humanizePercentage
		humanizeTimestamp toTime toDuration now pathPrefix externalURL parseDuration
		urlQueryEscape`) {
		fm[name] = func(...any) any { return nil }
	}
	return fm
}()

// parseAlertTemplate parses a label or annotation as Prometheus does, with
// the variables it defines in front.
func parseAlertTemplate(text string) error {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	_, err := template.New("alert").Funcs(alertTemplateFuncs).Option("missingkey=zero").Parse(defs + text)
	return err
}

// metricName is a selector's metric name, from its name or an equality
// matcher on __name__.
func metricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

func hasRegexMatcher(vs *parser.VectorSelector, name string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Name == name && m.Type == labels.MatchRegexp {
			return true
		}
	}
	return false
}

var (
	grafanaIntervalRE = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)
	grafanaVarRE      = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]`)
	labelValuesRE     = regexp.MustCompile(`^\s*label_values\(\s*(.+)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	queryResultRE     = regexp.MustCompile(`^\s*query_result\(\s*(.+)\s*\)\s*$`)
)

// grafanaToPromQL replaces Grafana's variables: intervals by 5m, the others
// by x (they only stand in label values and regular expressions here).
func grafanaToPromQL(expr string) string {
	expr = grafanaIntervalRE.ReplaceAllString(expr, "5m")
	return grafanaVarRE.ReplaceAllString(expr, "x")
}

// variableQuery is a query variable's query: a string in older dashboards,
// an object with a query field in current ones.
func variableQuery(v map[string]any) string {
	switch q := v["query"].(type) {
	case string:
		return q
	case map[string]any:
		if s, ok := q["query"].(string); ok {
			return s
		}
	}
	s, _ := v["definition"].(string)
	return s
}

// forEachPanel calls fn for every panel, including those nested in rows
// (collapsed rows hold theirs) and in old-style dashboard rows.
func forEachPanel(dash map[string]any, fn func(map[string]any)) {
	var walk func(list any)
	walk = func(list any) {
		panels, _ := list.([]any)
		for _, p := range panels {
			panel, ok := p.(map[string]any)
			if !ok {
				continue
			}
			fn(panel)
			walk(panel["panels"])
		}
	}
	walk(dash["panels"])
	rows, _ := dash["rows"].([]any)
	for _, r := range rows {
		if row, ok := r.(map[string]any); ok {
			walk(row["panels"])
		}
	}
}

// walkJSON calls fn for every object in v, with its JSON path.
func walkJSON(v any, path string, fn func(string, map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(path, v)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			walkJSON(v[k], path+"."+k, fn)
		}
	case []any:
		for i, e := range v {
			walkJSON(e, fmt.Sprintf("%s[%d]", path, i), fn)
		}
	}
}

func readFile(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scrape reads the metric families of a metrics listener (host:port).
func scrape(t *testing.T, metricsAddr string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics = %d", resp.StatusCode)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}
