// Package policy decides whether a signed-in user may pass: a pure function
// over the user's claims and the rules, with no HTTP in it.
package policy

import (
	"net/url"
	"strings"
)

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
}

// Identity is what the rules look at.
type Identity struct {
	Email  string
	Groups []string
}

// Reason says why a decision was made, for debug logs.
type Reason string

const (
	Allowed         Reason = "allowed"
	EmailNotAllowed Reason = "email not allowed"
	GroupNotAllowed Reason = "no allowed group"
)

// Config rules from the authorization section of the configuration. The
// email domains and the emails are one condition: an email passes when its
// domain is allowed or it is listed (as in oauth2-proxy). Groups are a
// second condition.
func (r Rules) Decide(id Identity) (bool, Reason) {
	if (len(r.EmailDomains) > 0 || len(r.Emails) > 0) &&
		!matchDomain(r.EmailDomains, id.Email) && !matchEmail(r.Emails, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Groups) > 0 && !matchGroup(r.Groups, id.Groups) {
		return false, GroupNotAllowed
	}
	return true, Allowed
}

// Query rules narrow the configured ones for one ingress, from the check's
// allowed_groups, allowed_emails and allowed_email_domains parameters: each
// given list must match on its own.
func (r Rules) DecideQuery(id Identity) (bool, Reason) {
	if len(r.EmailDomains) > 0 && !matchDomain(r.EmailDomains, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Emails) > 0 && !matchEmail(r.Emails, id.Email) {
		return false, EmailNotAllowed
	}
	if len(r.Groups) > 0 && !matchGroup(r.Groups, id.Groups) {
		return false, GroupNotAllowed
	}
	return true, Allowed
}

// ParseQuery reads the allowed_* parameters of a check's query string
// (comma-separated lists). It returns the zero Rules when none is set.
func ParseQuery(rawQuery string) (Rules, error) {
	if rawQuery == "" {
		return Rules{}, nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Rules{}, err
	}
	return Rules{
		EmailDomains: splitList(q["allowed_email_domains"]),
		Emails:       splitList(q["allowed_emails"]),
		Groups:       splitList(q["allowed_groups"]),
	}, nil
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

func matchGroup(rules, groups []string) bool {
	for _, r := range rules {
		for _, g := range groups {
			if r == g {
				return true
			}
		}
	}
	return false
}
