package policy

import (
	"fmt"
	"net/url"
	"strings"
)

// Bounds of allowed_claims. The query comes from an ingress annotation or a
// gateway's configuration, not from the user, but it is parsed on every
// check: a typo that repeats a rule thousands of times must fail, not cost
// a millisecond per request.
const (
	maxClaimsParam = 4 << 10 // bytes, all allowed_claims parameters together
	maxClaimRules  = 32
	maxClaimValues = 64 // per rule
	maxClaimName   = 128
)

const claimsParam = "allowed_claims"

// ParseQuery reads the allowed_* parameters of a check's query string:
// allowed_groups, allowed_emails and allowed_email_domains are
// comma-separated lists; allowed_claims is rules separated by ";", each a
// claim name and its allowed values separated by the first ":", the values
// by "|" ("department:platform|security;acr:silver"). A repeated parameter
// adds to the list (or the rules). It returns the zero Rules when none is
// set, and an error for anything malformed, which the check turns into a
// 403: a broken rule must not open the door.
func ParseQuery(rawQuery string) (Rules, error) {
	if rawQuery == "" {
		return Rules{}, nil
	}
	q, err := url.ParseQuery(escapeClaimSemicolons(rawQuery))
	if err != nil {
		return Rules{}, err
	}
	claims, err := parseClaims(q[claimsParam])
	if err != nil {
		return Rules{}, err
	}
	return Rules{
		EmailDomains: splitList(q["allowed_email_domains"]),
		Emails:       splitList(q["allowed_emails"]),
		Groups:       splitList(q["allowed_groups"]),
		Claims:       claims,
	}, nil
}

// escapeClaimSemicolons lets allowed_claims use a bare ";" between rules, as
// written in an nginx or Traefik configuration. url.ParseQuery refuses a
// bare ";" anywhere (some servers took it for "&", a parameter-smuggling
// differential), so within the allowed_claims parameter, and only there,
// it becomes "%3B", which never separates parameters. A ";" elsewhere
// still fails the parse.
func escapeClaimSemicolons(rawQuery string) string {
	if !strings.Contains(rawQuery, ";") {
		return rawQuery
	}
	pairs := strings.Split(rawQuery, "&")
	for i, p := range pairs {
		if strings.HasPrefix(p, claimsParam+"=") {
			pairs[i] = strings.ReplaceAll(p, ";", "%3B")
		}
	}
	return strings.Join(pairs, "&")
}

// parseClaims reads decoded allowed_claims values. Names and values are
// trimmed of spaces, like the other allowed_* lists; anything empty is an
// error rather than skipped, because a parameter that is set but says
// nothing (a template that rendered "allowed_claims=") must not quietly
// allow everyone. Errors count rules from 1 and quote no values.
func parseClaims(params []string) ([]ClaimRule, error) {
	total := 0
	for _, p := range params {
		total += len(p)
	}
	if total > maxClaimsParam {
		return nil, fmt.Errorf("%s: %d bytes, at most %d", claimsParam, total, maxClaimsParam)
	}
	var rules []ClaimRule
	for _, p := range params {
		for _, spec := range strings.Split(p, ";") {
			n := len(rules) + 1
			if n > maxClaimRules {
				return nil, fmt.Errorf("%s: more than %d rules", claimsParam, maxClaimRules)
			}
			name, list, ok := strings.Cut(spec, ":")
			if !ok {
				return nil, fmt.Errorf("%s: rule %d has no \":\" between the claim and its values", claimsParam, n)
			}
			name = strings.TrimSpace(name)
			if name == "" {
				return nil, fmt.Errorf("%s: rule %d names no claim", claimsParam, n)
			}
			if len(name) > maxClaimName {
				return nil, fmt.Errorf("%s: rule %d: claim name over %d bytes", claimsParam, n, maxClaimName)
			}
			values := strings.Split(list, "|")
			if len(values) > maxClaimValues {
				return nil, fmt.Errorf("%s: rule %d: more than %d values", claimsParam, n, maxClaimValues)
			}
			for i, v := range values {
				if values[i] = strings.TrimSpace(v); values[i] == "" {
					return nil, fmt.Errorf("%s: rule %d: empty value", claimsParam, n)
				}
			}
			rules = append(rules, ClaimRule{Claim: name, Values: values})
		}
	}
	return rules, nil
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
