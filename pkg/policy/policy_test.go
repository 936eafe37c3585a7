package policy

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	alice := Identity{Email: "alice@example.com", Groups: []string{"dev", "ops"}}
	tests := []struct {
		name  string
		rules Rules
		id    Identity
		want  bool
	}{
		{"no rules", Rules{}, alice, true},
		{"any domain", Rules{EmailDomains: []string{"*"}}, Identity{}, true},
		{"exact domain", Rules{EmailDomains: []string{"example.com"}}, alice, true},
		{"domain case-insensitive", Rules{EmailDomains: []string{"EXAMPLE.com"}}, alice, true},
		{"other domain", Rules{EmailDomains: []string{"example.org"}}, alice, false},
		{"subdomain needs dot rule", Rules{EmailDomains: []string{"example.com"}}, Identity{Email: "a@eu.example.com"}, false},
		{"dot rule matches subdomain", Rules{EmailDomains: []string{".example.com"}}, Identity{Email: "a@eu.example.com"}, true},
		{"star-dot rule matches subdomain", Rules{EmailDomains: []string{"*.example.com"}}, Identity{Email: "a@eu.example.com"}, true},
		{"dot rule not the apex", Rules{EmailDomains: []string{".example.com"}}, alice, false},
		{"dot rule not a lookalike", Rules{EmailDomains: []string{".example.com"}}, Identity{Email: "a@badexample.com"}, false},
		{"suffix lookalike", Rules{EmailDomains: []string{"example.com"}}, Identity{Email: "a@example.com.evil.com"}, false},
		{"several @ never pass a domain", Rules{EmailDomains: []string{"example.com"}}, Identity{Email: "evil@evil.com@example.com"}, false},
		{"several @ never pass a subdomain rule", Rules{EmailDomains: []string{".example.com"}}, Identity{Email: "x@evil.com@a.example.com"}, false},
		{"several @ not an email either", Rules{Emails: []string{"a@b@example.com"}}, Identity{Email: "a@b@example.com"}, false},
		{"empty local part", Rules{EmailDomains: []string{"example.com"}}, Identity{Email: "@example.com"}, false},
		{"no email", Rules{EmailDomains: []string{"example.com"}}, Identity{}, false},
		{"listed email", Rules{Emails: []string{"Alice@Example.com"}}, alice, true},
		{"unlisted email", Rules{Emails: []string{"bob@example.com"}}, alice, false},
		{"email or domain: email listed", Rules{EmailDomains: []string{"example.org"}, Emails: []string{"alice@example.com"}}, alice, true},
		{"group", Rules{Groups: []string{"ops"}}, alice, true},
		{"group case-sensitive", Rules{Groups: []string{"OPS"}}, alice, false},
		{"no group", Rules{Groups: []string{"admins"}}, alice, false},
		{"domain and group both needed", Rules{EmailDomains: []string{"example.com"}, Groups: []string{"admins"}}, alice, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := tc.rules.Decide(tc.id); got != tc.want {
				t.Errorf("Decide = %v (%s), want %v", got, reason, tc.want)
			}
		})
	}
}

func TestQuery(t *testing.T) {
	alice := Identity{Email: "alice@example.com", Groups: []string{"dev"}}
	tests := []struct {
		name  string
		query string
		want  bool
	}{
		{"none", "", true},
		{"group any of", "allowed_groups=ops,dev", true},
		{"group none of", "allowed_groups=ops,admins", false},
		{"all lists must pass", "allowed_groups=dev&allowed_emails=bob@example.com", false},
		{"email and domain each pass", "allowed_emails=alice@example.com&allowed_email_domains=example.com", true},
		{"domain list", "allowed_email_domains=example.org,%20example.com", true},
		{"repeated parameter", "allowed_groups=ops&allowed_groups=dev", true},
		{"unrelated parameters ignored", "foo=bar", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := r.DecideQuery(alice); got != tc.want {
				t.Errorf("got %v, want %v (rules %+v)", got, tc.want, r)
			}
		})
	}
	if _, err := ParseQuery("allowed_groups=%zz"); err == nil {
		t.Error("a malformed query must be an error")
	}
}

func TestClaims(t *testing.T) {
	alice := Identity{
		Email: "alice@example.com",
		Claims: map[string][]string{
			"department": {"platform"},
			"roles":      {"viewer", "editor"},
			"acr":        {"urn:mace:incommon:iap:silver"},
			"level":      {"3"},
		},
	}
	rule := func(claim string, values ...string) ClaimRule { return ClaimRule{Claim: claim, Values: values} }
	tests := []struct {
		name   string
		claims []ClaimRule
		id     Identity
		want   bool
	}{
		{"string claim", []ClaimRule{rule("department", "security", "platform")}, alice, true},
		{"array member", []ClaimRule{rule("roles", "editor")}, alice, true},
		{"number as text", []ClaimRule{rule("level", "3")}, alice, true},
		{"value with colons", []ClaimRule{rule("acr", "urn:mace:incommon:iap:silver")}, alice, true},
		{"no value allowed", []ClaimRule{rule("department", "security")}, alice, false},
		{"case-sensitive", []ClaimRule{rule("department", "Platform")}, alice, false},
		{"no substring", []ClaimRule{rule("department", "plat")}, alice, false},
		{"claim name case-sensitive", []ClaimRule{rule("Department", "platform")}, alice, false},
		{"absent claim", []ClaimRule{rule("team", "platform")}, alice, false},
		{"no claims at all", []ClaimRule{rule("department", "platform")}, Identity{Email: "alice@example.com"}, false},
		{"rule without values never holds", []ClaimRule{rule("department")}, alice, false},
		{"every rule must hold", []ClaimRule{rule("department", "platform"), rule("roles", "admin")}, alice, false},
		{"all rules hold", []ClaimRule{rule("department", "platform"), rule("roles", "admin", "viewer")}, alice, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Rules{Claims: tc.claims}
			ok, reason := r.Decide(tc.id)
			if ok != tc.want {
				t.Errorf("Decide = %v (%s), want %v", ok, reason, tc.want)
			}
			if !ok && reason != ClaimNotAllowed {
				t.Errorf("reason %q, want %q", reason, ClaimNotAllowed)
			}
			if qok, qreason := r.DecideQuery(tc.id); qok != ok || qreason != reason {
				t.Errorf("DecideQuery = %v (%s), Decide %v (%s)", qok, qreason, ok, reason)
			}
		})
	}
	// Claims are one more condition: the email and group rules still decide first.
	r := Rules{Groups: []string{"ops"}, Claims: []ClaimRule{rule("department", "platform")}}
	if ok, reason := r.Decide(alice); ok || reason != GroupNotAllowed {
		t.Errorf("group missing, claim fine: %v (%s), want a group refusal", ok, reason)
	}
	if strings.Contains(string(ClaimNotAllowed), "department") {
		t.Error("the reason must not name the claim")
	}
}

func TestQueryClaims(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  []ClaimRule
	}{
		{"one rule", "allowed_claims=department:platform", []ClaimRule{{"department", []string{"platform"}}}},
		{"the issue's example, bare ;", "allowed_claims=department:platform|security;acr:silver",
			[]ClaimRule{{"department", []string{"platform", "security"}}, {"acr", []string{"silver"}}}},
		{"escaped separators", "allowed_claims=department%3Aplatform%7Csecurity%3Bacr%3Asilver",
			[]ClaimRule{{"department", []string{"platform", "security"}}, {"acr", []string{"silver"}}}},
		{"values keep later colons", "allowed_claims=acr:urn:mace:incommon:iap:silver",
			[]ClaimRule{{"acr", []string{"urn:mace:incommon:iap:silver"}}}},
		{"spaces trimmed", "allowed_claims=%20department%20:%20platform%20|%20security",
			[]ClaimRule{{"department", []string{"platform", "security"}}}},
		{"repeated parameter adds rules", "allowed_claims=a:1&allowed_claims=b:2",
			[]ClaimRule{{"a", []string{"1"}}, {"b", []string{"2"}}}},
		{"beside other parameters", "allowed_groups=dev&allowed_claims=a:1;b:2&refresh=redirect",
			[]ClaimRule{{"a", []string{"1"}}, {"b", []string{"2"}}}},
		{"no claims", "allowed_groups=dev", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Claims, tc.want) {
				t.Errorf("Claims = %q, want %q", r.Claims, tc.want)
			}
		})
	}

	r, err := ParseQuery("allowed_claims=department:platform|security;acr:silver")
	if err != nil {
		t.Fatal(err)
	}
	both := Identity{Claims: map[string][]string{"department": {"security"}, "acr": {"silver"}}}
	if ok, reason := r.DecideQuery(both); !ok {
		t.Errorf("both rules hold, got %s", reason)
	}
	one := Identity{Claims: map[string][]string{"department": {"security"}, "acr": {"bronze"}}}
	if ok, reason := r.DecideQuery(one); ok || reason != ClaimNotAllowed {
		t.Errorf("acr fails: got %v (%s)", ok, reason)
	}
}

func TestQueryClaimsMalformed(t *testing.T) {
	rules := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("c%d:v", i)
		}
		return strings.Join(s, ";")
	}
	values := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("v%d", i)
		}
		return "c:" + strings.Join(s, "|")
	}
	tests := []struct {
		name  string
		value string // the parameter's value, decoded
		ok    bool
	}{
		{"set but empty", "", false},
		{"no colon", "department", false},
		{"empty claim", ":platform", false},
		{"blank claim", "  :platform", false},
		{"empty value list", "department:", false},
		{"empty value", "department:a||b", false},
		{"trailing value separator", "department:a|", false},
		{"empty rule", "a:1;;b:2", false},
		{"trailing rule separator", "a:1;", false},
		{"32 rules", rules(32), true},
		{"33 rules", rules(33), false},
		{"64 values", values(64), true},
		{"65 values", values(65), false},
		{"128-byte claim", strings.Repeat("c", 128) + ":v", true},
		{"129-byte claim", strings.Repeat("c", 129) + ":v", false},
		{"4 KiB", "c:" + strings.Repeat("v", 4096-2), true},
		{"over 4 KiB", "c:" + strings.Repeat("v", 4096-1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQuery("allowed_claims=" + url.QueryEscape(tc.value))
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// The limit counts all the parameters together.
	half := "allowed_claims=c:" + strings.Repeat("v", 2046)
	if _, err := ParseQuery(half + "&" + half); err != nil {
		t.Errorf("two 2 KiB parameters: %v", err)
	}
	if _, err := ParseQuery(half + "&" + half + "&allowed_claims=d:1"); err == nil {
		t.Error("three parameters over 4 KiB together: no error")
	}
	// A bare ";" outside allowed_claims still fails the whole query, closed.
	if _, err := ParseQuery("allowed_groups=a;b&allowed_claims=c:1"); err == nil {
		t.Error("a bare ; in allowed_groups must stay an error")
	}
}
