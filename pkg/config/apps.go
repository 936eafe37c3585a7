package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/extauth/extauth/pkg/policy"
)

// App is one protected app of a deployment that serves several (apps: in
// the file): its hosts, its own client at its own provider, its session
// cookie and its rules. Without apps, the top-level oidc, session and
// authorization are the one app.
type App struct {
	// Name is [a-z0-9-]{1,32}, unique: the app label of the metrics, the
	// logs' app, and ?app=NAME in an auth URL.
	Name string `json:"name"`
	// Hosts are the hosts whose requests are this app's: exact names, or
	// one leading wildcard label ("*.grafana.example.com", which matches
	// a.grafana.example.com but not grafana.example.com). An exact host
	// wins over a wildcard of another app.
	Hosts []string `json:"hosts"`
	// OIDC is the app's client. Every key the app leaves out is the
	// top-level oidc's: after Parse this holds the effective settings.
	OIDC OIDC `json:"oidc"`
	// Session holds the app's cookie settings, inherited the same way.
	Session AppSession `json:"session"`
	// Authorization holds the app's rules.
	Authorization AppAuthorization `json:"authorization"`
}

// AppSession is the part of session.* an app may set: its cookie.
type AppSession struct {
	CookieName     string `json:"cookieName"`
	CookieDomain   string `json:"cookieDomain"`
	CookiePath     string `json:"cookiePath"`
	CookieSecure   bool   `json:"cookieSecure"`
	CookieSameSite string `json:"cookieSameSite"`
}

// AppAuthorization are an app's rules. EmailDomains, Emails and Groups
// the app leaves out are the top-level authorization's.
type AppAuthorization struct {
	EmailDomains []string `json:"emailDomains"`
	Emails       []string `json:"emails"`
	Groups       []string `json:"groups"`
	// Claims must each hold (AND); a claim holds when one of its values
	// is one of Values (OR).
	Claims []ClaimRule `json:"claims"`
	// Bearer lists the issuers whose JWTs API clients may present instead
	// of a session, each verified by its own discovery or JWKS.
	Bearer []BearerIssuer `json:"bearer"`
	// Preflight "allow" lets a CORS preflight (OPTIONS with
	// Access-Control-Request-Method) pass without a session; "deny" (the
	// default) does not.
	Preflight string `json:"preflight"`
	// Skip are routes that pass without a session (and without identity
	// headers).
	Skip []SkipRule `json:"skip"`
}

// ClaimRule holds when the claim has one of the values.
type ClaimRule struct {
	Claim  string   `json:"claim"`
	Values []string `json:"values"`
}

// BearerIssuer is one issuer of accepted bearer tokens.
type BearerIssuer struct {
	IssuerURL string   `json:"issuerURL"`
	Audiences []string `json:"audiences"`
	// JWKSURL, when set, is where its keys are (no discovery).
	JWKSURL string `json:"jwksURL"`
}

// SkipRule is one unauthenticated route: the methods, and the normalized
// path exactly or a path prefix.
type SkipRule struct {
	Methods    []string `json:"methods"`
	Path       string   `json:"path"`
	PathPrefix string   `json:"pathPrefix"`
}

// Preflight values.
const (
	PreflightAllow = "allow"
	PreflightDeny  = "deny"
)

// HasClient reports whether the top-level oidc names a client: with apps,
// it is the app of a request no app's host matches; without, the only one.
func (c *Config) HasClient() bool { return c.OIDC.ClientID != "" }

// inheritApps makes each app's oidc, session and authorization the
// top-level ones with the app's own keys over them: the apps were decoded
// onto zero values (reporting their unknown keys), and are decoded again
// here onto copies of the top level. Runs after the top level is decoded,
// before the files are read.
func (c *Config) inheritApps(raw any) {
	items, _ := asMap(raw)["apps"].([]any)
	for i := range c.Apps {
		if i >= len(items) {
			break
		}
		rawApp := asMap(items[i])
		// The first pass reported this app's problems; this one would
		// only repeat them.
		var quiet decoder

		o := cloneOIDC(c.OIDC)
		rawOIDC := asMap(rawApp["oidc"])
		quiet.value("", rawOIDC, reflect.ValueOf(&o).Elem())
		// A secret the app states replaces the top level's, in either form.
		_, inline := rawOIDC["clientSecret"]
		_, file := rawOIDC["clientSecretFile"]
		switch {
		case inline && !file:
			o.ClientSecretFile = ""
		case file && !inline:
			o.ClientSecret = ""
		}
		c.Apps[i].OIDC = o

		s := c.Session
		sess := AppSession{CookieName: s.CookieName, CookieDomain: s.CookieDomain, CookiePath: s.CookiePath,
			CookieSecure: s.CookieSecure, CookieSameSite: s.CookieSameSite}
		quiet.value("", asMap(rawApp["session"]), reflect.ValueOf(&sess).Elem())
		c.Apps[i].Session = sess

		rawAuthz := asMap(rawApp["authorization"])
		authz := c.Apps[i].Authorization
		_, domains := rawAuthz["emailDomains"]
		_, emails := rawAuthz["emails"]
		_, groups := rawAuthz["groups"]
		switch {
		case !domains && !emails:
			authz.EmailDomains, authz.Emails = slices.Clone(c.Authorization.EmailDomains), slices.Clone(c.Authorization.Emails)
		case emails && !domains:
			// As at the top level: emails alone admit only them.
			authz.EmailDomains = nil
		case domains && !emails:
			authz.Emails = nil
		}
		if !groups {
			authz.Groups = slices.Clone(c.Authorization.Groups)
		}
		if authz.Preflight == "" {
			authz.Preflight = PreflightDeny
		}
		c.Apps[i].Authorization = authz
	}
}

func cloneOIDC(o OIDC) OIDC {
	o.Scopes = slices.Clone(o.Scopes)
	o.ExtraAuthParams = maps.Clone(o.ExtraAuthParams)
	return o
}

// Session is the top-level session with the app's cookie settings: what
// the app's session store takes.
func (a *App) SessionConfig(top Session) Session {
	top.CookieName, top.CookieDomain, top.CookiePath = a.Session.CookieName, a.Session.CookieDomain, a.Session.CookiePath
	top.CookieSecure, top.CookieSameSite = a.Session.CookieSecure, a.Session.CookieSameSite
	return top
}

var appNameRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// validateApps checks every app, each problem at its YAML path.
func (c *Config) validateApps(p *problems) {
	names := map[string]int{}
	hosts := map[string]int{}
	type cookie struct{ name, domain string }
	cookies := map[cookie]string{}
	if c.HasClient() {
		cookies[cookie{c.Session.CookieName, c.Session.CookieDomain}] = "the top level"
	}
	for i := range c.Apps {
		a := &c.Apps[i]
		at := fmt.Sprintf("apps[%d]", i)
		switch j, dup := names[a.Name]; {
		case !appNameRE.MatchString(a.Name):
			p.add(at+".name", "%q must be 1 to 32 of a-z, 0-9 and -", a.Name)
		case dup:
			p.add(at+".name", "%q is also apps[%d]'s name", a.Name, j)
		default:
			names[a.Name] = i
		}
		if len(a.Hosts) == 0 {
			p.add(at+".hosts", "required: the hosts whose requests are this app's")
		}
		for k, h := range a.Hosts {
			path := fmt.Sprintf("%s.hosts[%d]", at, k)
			if !validAppHost(h) {
				p.add(path, "%q is not a lowercase host name, or *. and one", h)
				continue
			}
			if j, dup := hosts[h]; dup {
				p.add(path, "duplicate of apps[%d]", j)
				continue
			}
			hosts[h] = i
		}
		// The app's client and cookie, validated as the top level's are,
		// the paths moved under the app.
		var sub problems
		a.OIDC.validate(&sub)
		s := a.SessionConfig(c.Session)
		s.validateCookie(&sub)
		for _, err := range sub {
			msg := err.Error()
			for _, section := range []string{"oidc.", "session."} {
				if strings.HasPrefix(msg, section) {
					msg = at + "." + msg
					break
				}
			}
			*p = append(*p, fmt.Errorf("%s", msg))
		}
		// Host-only cookies (no domain) of different hosts never meet; on a
		// shared domain one app's sign-in would overwrite the other's.
		ck := cookie{a.Session.CookieName, a.Session.CookieDomain}
		if other, dup := cookies[ck]; dup && ck.domain != "" {
			p.add(at+".session.cookieName", "%q is also %s's cookie: each app needs a cookie of its own, or a session of one would overwrite the other's", a.Session.CookieName, other)
		} else {
			cookies[ck] = at
		}
		a.Authorization.validate(p, at+".authorization")
	}
}

// validAppHost is a lowercase host name, optionally with one leading
// wildcard label.
func validAppHost(h string) bool {
	if h != strings.ToLower(h) {
		return false
	}
	name, wildcard := strings.CutPrefix(h, "*.")
	if strings.Contains(name, "*") || !validHostname(name) {
		return false
	}
	// "*.com" would be every site of a top-level domain.
	return !wildcard || strings.Contains(name, ".")
}

func (a *AppAuthorization) validate(p *problems, at string) {
	for i, d := range a.EmailDomains {
		if !validEmailDomain(d) {
			p.add(fmt.Sprintf("%s.emailDomains[%d]", at, i), `%q is not "*", a domain, or ".domain" / "*.domain" for its subdomains`, d)
		}
	}
	for i, g := range a.Groups {
		if g == "" {
			p.add(fmt.Sprintf("%s.groups[%d]", at, i), "must not be empty")
		}
	}
	for i, r := range a.Claims {
		path := fmt.Sprintf("%s.claims[%d]", at, i)
		if r.Claim == "" {
			p.add(path+".claim", "required")
		}
		if len(r.Values) == 0 {
			p.add(path+".values", "required: at least one value")
		}
	}
	for i, b := range a.Bearer {
		path := fmt.Sprintf("%s.bearer[%d]", at, i)
		if b.IssuerURL == "" {
			p.add(path+".issuerURL", "required")
		} else if j := slices.IndexFunc(a.Bearer[:i], func(o BearerIssuer) bool { return o.IssuerURL == b.IssuerURL }); j >= 0 {
			p.add(path+".issuerURL", "duplicate of %s.bearer[%d]: list all its audiences there", at, j)
		} else {
			checkURL(p, path+".issuerURL", b.IssuerURL)
		}
		if len(b.Audiences) == 0 {
			p.add(path+".audiences", "required: the audiences a token must name one of")
		}
		if b.JWKSURL != "" {
			checkURL(p, path+".jwksURL", b.JWKSURL)
		}
	}
	switch a.Preflight {
	case PreflightAllow, PreflightDeny:
	default:
		p.add(at+".preflight", "%q is not allow or deny", a.Preflight)
	}
	// The skip rules, checked by the matcher that serves them.
	if _, err := policy.NewSkips(a.SkipRules()); err != nil {
		for _, e := range unjoin(err) {
			var bad *policy.SkipRuleError
			if !errors.As(e, &bad) {
				p.add(at+".skip", "%v", e)
				continue
			}
			path := fmt.Sprintf("%s.skip[%d]", at, bad.Index)
			if bad.Field != "" {
				path += "." + bad.Field
			}
			p.add(path, "%v", bad.Err)
		}
	}
}

// SkipRules are the skip rules as policy.NewSkips takes them.
func (a *AppAuthorization) SkipRules() []policy.SkipRule {
	out := make([]policy.SkipRule, len(a.Skip))
	for i, r := range a.Skip {
		out[i] = policy.SkipRule{Methods: r.Methods, Path: r.Path, PathPrefix: r.PathPrefix}
	}
	return out
}

// ClaimRules are the claim rules as policy takes them.
func (a *AppAuthorization) ClaimRules() []policy.ClaimRule {
	out := make([]policy.ClaimRule, len(a.Claims))
	for i, r := range a.Claims {
		out[i] = policy.ClaimRule{Claim: r.Claim, Values: r.Values}
	}
	return out
}

// unjoin lists the errors errors.Join made one.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
