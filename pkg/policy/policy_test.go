package policy

import "testing"

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
