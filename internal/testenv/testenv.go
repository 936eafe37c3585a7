// Package testenv finds the files tests share with the rest of the project:
// the repository root and ../shared/testdata beside it, as laid out in CI.
package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot walks up from the working directory to the repository's root:
// the folder whose go.mod is the main module's (e2e/ has a go.mod of its own).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/extauth/extauth\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// TokenSet is a token endpoint answer of a real provider's size, from
// ../shared/testdata/tokensets/<name>.json (okta, keycloak, entra).
type TokenSet struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	TokenType    string `json:"token_type"`
}

// LoadTokenSet reads one of the shared token sets; the test fails when it is missing.
func LoadTokenSet(t testing.TB, name string) TokenSet {
	t.Helper()
	path := filepath.Join(RepoRoot(t), "..", "shared", "testdata", "tokensets", name+".json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("token set %s: %v (tests expect ../shared beside the repository)", name, err)
	}
	var ts TokenSet
	if err := json.Unmarshal(data, &ts); err != nil {
		t.Fatalf("token set %s: %v", name, err)
	}
	return ts
}

// EntraGroups are 40 group IDs shaped like Entra ID's (UUIDs), the count
// the entra token set stands for.
func EntraGroups() []string {
	groups := make([]string, 40)
	for i := range groups {
		groups[i] = fmt.Sprintf("%08x-1c2d-4e5f-8a9b-%012x", i*7919, i*104729)
	}
	return groups
}
