// Package policy decides whether a request may pass: whether a signed-in
// user's claims satisfy the rules (Decide, DecideQuery), whether a route
// needs no session at all (Skips), and whether a request is a CORS preflight
// (Preflight). Pure functions, no handlers, no configuration loading.
package policy

import "strings"

// Rules is one set of conditions. Within a list any entry may match; every
// list that is set must match.
type Rules struct {
	// EmailDomains: "*" (any user), "example.com" (exactly that domain),
	// ".example.com" or "*.example.com" (any subdomain of example.com).
	EmailDomains []string
	// Emails are exact addresses (case-insensitive).
	Emails []string
	// Groups: the user must be in one of them (case-sensitive, as providers send them).
	Groups []string
	// Claims: every rule must hold (unlike the lists above, whose entries
	// are alternatives, each rule is a condition of its own).
	Claims []ClaimRule
}

// ClaimRule holds when any of the identity's values for Claim equals any of
// Values, exactly and case-sensitively (claim values are identifiers, not
// addresses: "Platform" and "platform" may be different departments). A
// rule without Values never holds.
type ClaimRule struct {
	Claim  string
	Values []string
}

// Identity is what the rules look at.
type Identity struct {
	Email  string
	Groups []string
	// Claims maps a claim's name to its values as text: a string claim is
	// one value, an array its members, a number or a bool its text ("42",
	// "true"). A claim that is absent, null or an object has no values.
	Claims map[string][]string
}

// Reason says why a decision was made, for debug logs.
type Reason string

const (
	Allowed         Reason = "allowed"
	EmailNotAllowed Reason = "email not allowed"
	GroupNotAllowed Reason = "no allowed group"
	// ClaimNotAllowed names neither the claim nor its values: reasons reach
	// logs and responses, and a claim rule may describe something private.
	ClaimNotAllowed Reason = "claim not allowed"
)

// Config rules from the authorization section of the configuration. The
// email domains and the emails are one condition: an email passes when its
// domain is allowed or it is listed (as in oauth2-proxy). Groups are a
// second condition, each claim rule one more.
func (r Rules) Decide(id Identity) (bool, Reason) {
	if (len(r.EmailDomains) > 0 || len(r.Emails) > 0) &&
		!matchDomain(r.EmailDomains, id.Email) && !matchEmail(r.Emails, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Groups) > 0 && !anyEqual(r.Groups, id.Groups) {
		return false, GroupNotAllowed
	}
	if !matchClaims(r.Claims, id.Claims) {
		return false, ClaimNotAllowed
	}
	return true, Allowed
}

// Query rules narrow the configured ones for one ingress, from the check's
// allowed_groups, allowed_emails, allowed_email_domains and allowed_claims
// parameters: each given list must match on its own, and every claim rule.
func (r Rules) DecideQuery(id Identity) (bool, Reason) {
	if len(r.EmailDomains) > 0 && !matchDomain(r.EmailDomains, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Emails) > 0 && !matchEmail(r.Emails, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Groups) > 0 && !anyEqual(r.Groups, id.Groups) {
		return false, GroupNotAllowed
	}
	if !matchClaims(r.Claims, id.Claims) {
		return false, ClaimNotAllowed
	}
	return true, Allowed
}

// emailDomain returns the domain of a plausible address: exactly one "@",
// something on both sides. "a@b@evil.com" has no domain at all, so it can
// never pass a domain rule by its last part.
func emailDomain(email string) (string, bool) {
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return "", false
	}
	return domain, true
}

func matchDomain(rules []string, email string) bool {
	for _, r := range rules {
		if r == "*" {
			return true
		}
	}
	domain, ok := emailDomain(email)
	if !ok {
		return false
	}
	for _, r := range rules {
		switch {
		case strings.HasPrefix(r, "*."):
			if hasSuffixFold(domain, r[1:]) {
				return true
			}
		case strings.HasPrefix(r, "."):
			if hasSuffixFold(domain, r) {
				return true
			}
		default:
			if strings.EqualFold(domain, r) {
				return true
			}
		}
	}
	return false
}

// hasSuffixFold reports whether s ends with suffix (".example.com") and has
// at least one more label before it.
func hasSuffixFold(s, suffix string) bool {
	return len(s) > len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

func matchEmail(rules []string, email string) bool {
	if _, ok := emailDomain(email); !ok {
		return false
	}
	for _, r := range rules {
		if strings.EqualFold(r, email) {
			return true
		}
	}
	return false
}

// anyEqual reports whether a value the user has (a group, a claim value)
// equals an allowed one, exactly.
func anyEqual(allowed, have []string) bool {
	for _, a := range allowed {
		for _, h := range have {
			if a == h {
				return true
			}
		}
	}
	return false
}

// matchClaims: every rule holds (no rules: nothing to hold).
func matchClaims(rules []ClaimRule, claims map[string][]string) bool {
	for _, r := range rules {
		if !anyEqual(r.Values, claims[r.Claim]) {
			return false
		}
	}
	return true
}
