// Package identity turns what a provider states about a user (the claims
// of an ID token, of the userinfo endpoint, of a bearer token) into the
// session extauth keeps: one constructor for sign-in, refresh and bearer
// tokens alike, and the one place that knows the providers' claim quirks
// (numeric subs, a lone string for a list, an email marked unverified).
package identity

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Names are the claims that carry the identity (oidc.claims), and the
// claims kept for claim rules (Keep).
type Names struct {
	User, Email, PreferredUsername, Groups string
	Keep                                   []string
}

// Identity is what extauth keeps of a user's claims.
type Identity struct {
	User, Email, PreferredUsername string
	Groups                         []string
	// Claims are the kept claims the source stated, each as its values in
	// text; a claim it did not state has no key.
	Claims map[string][]string
	// present marks the fields a source stated, even as empty: a refreshed
	// ID token with "groups": [] removes the groups.
	present fields
	// groupsOverage: the token has too many groups to carry and says so
	// (Entra ID's _claim_names or hasgroups) instead of a groups claim.
	groupsOverage bool
}

// fields is a set of identity fields.
type fields uint8

const (
	fieldUser fields = 1 << iota
	fieldEmail
	fieldPreferredUsername
	fieldGroups
	allFields = fieldUser | fieldEmail | fieldPreferredUsername | fieldGroups
)

// Read reads the named claims. A field the claims do not state stays
// unstated, so that another source (userinfo, the session) may fill it.
func (n Names) Read(claims map[string]any) Identity {
	var id Identity
	if v, ok := claims[n.User]; ok {
		id.User, id.present = claimString(v), id.present|fieldUser
	}
	verified, stated := claims["email_verified"]
	if v, ok := claims[n.Email]; ok || (stated && explicitlyFalse(verified)) {
		// An address the provider says it has not verified proves nothing
		// about who signed in: it is not used for headers or email rules.
		if !explicitlyFalse(verified) {
			id.Email = claimString(v)
		}
		id.present |= fieldEmail
	}
	if v, ok := claims[n.PreferredUsername]; ok {
		id.PreferredUsername, id.present = claimString(v), id.present|fieldPreferredUsername
	}
	if v, ok := claims[n.Groups]; ok {
		id.Groups, id.present = claimStrings(v), id.present|fieldGroups
	} else {
		id.groupsOverage = groupsOverage(claims, n.Groups)
	}
	for _, name := range n.Keep {
		if v, ok := claims[name]; ok {
			if id.Claims == nil {
				id.Claims = make(map[string][]string, len(n.Keep))
			}
			id.Claims[name] = claimValues(v)
		}
	}
	return id
}

// claimValues is a kept claim's values in text: a string or number is
// one, a list its members.
func claimValues(v any) []string {
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for _, e := range list {
			if s := claimString(e); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	if s := claimString(v); s != "" {
		return []string{s}
	}
	return []string{}
}

// groupsOverage reports Entra ID's group overage: a user in more than 200
// groups gets a token without the groups claim and with
// "_claim_names": {"groups": "src1"} (pointing into _claim_sources), or,
// where the token must stay small, "hasgroups": true.
func groupsOverage(claims map[string]any, name string) bool {
	if names, ok := claims["_claim_names"].(map[string]any); ok {
		if _, ok := names[name]; ok {
			return true
		}
	}
	has, _ := claims["hasgroups"].(bool)
	return has
}

// Complete reports whether every field is stated.
func (id Identity) Complete() bool { return id.present == allFields }

// Fill takes from other the fields that id lacks and other states.
func (id *Identity) Fill(other Identity) {
	take := other.present &^ id.present
	if take&fieldUser != 0 {
		id.User = other.User
	}
	if take&fieldEmail != 0 {
		id.Email = other.Email
	}
	if take&fieldPreferredUsername != 0 {
		id.PreferredUsername = other.PreferredUsername
	}
	if take&fieldGroups != 0 {
		id.Groups = other.Groups
	}
	id.present |= take
	for name, values := range other.Claims {
		if _, stated := id.Claims[name]; !stated {
			if id.Claims == nil {
				id.Claims = map[string][]string{}
			}
			id.Claims[name] = values
		}
	}
}

// ClaimSource is a verified token or a userinfo answer.
type ClaimSource interface{ Claims(v any) error }

// Decode reads claims with numbers as json.Number: a numeric claim (an
// Okta or Google sub, an employee number) is kept as the provider wrote
// it, where float64 would print 2.48289761001e+11 or round it.
func Decode(src ClaimSource) (map[string]any, error) {
	var raw json.RawMessage
	if err := src.Claims(&raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	return claims, nil
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return ""
	}
}

// claimStrings reads a list claim; some providers send a lone string.
func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil
		}
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s := claimString(e); s != "" {
				out = append(out, s)
			}
		}
		return out
	default:
		return nil
	}
}

func explicitlyFalse(v any) bool {
	switch v := v.(type) {
	case bool:
		return !v
	case string:
		return strings.EqualFold(v, "false")
	default:
		return false
	}
}
