// Package testenv is what the tests, the e2e stack and the load benchmark
// (bench/, a program) share to run extauth's surroundings on loopback: the
// repository's files (its root, ../shared/testdata beside it as laid out in
// CI), free ports and waiting for a URL to answer, a redis-server, and nginx
// with the reference config examples/nginx/protected-app.conf. One copy,
// so that the tests and the benchmark measure the same setup.
//
// Each helper that fails a test has a variant without testing.TB that
// returns its error, for the benchmark: FindRepoRoot (RepoRoot), ReadTokenSet
// (LoadTokenSet), PickPort (FreePort), NewRedis (StartRedis).
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
// the folder whose go.mod is the main module's (bench/, e2e/ and
// charts/test/ have go.mods of their own).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// FindRepoRoot is RepoRoot for programs.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/extauth/extauth\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod of github.com/extauth/extauth above the working directory")
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

// TokenSetPath is where the shared token set name lies for the repository
// at root: beside it, in ../shared.
func TokenSetPath(root, name string) string {
	return filepath.Join(root, "..", "shared", "testdata", "tokensets", name+".json")
}

// LoadTokenSet reads one of the shared token sets; the test fails when it is missing.
func LoadTokenSet(t testing.TB, name string) TokenSet {
	t.Helper()
	ts, err := ReadTokenSet(TokenSetPath(RepoRoot(t), name))
	if err != nil {
		t.Fatalf("%v (tests expect ../shared beside the repository)", err)
	}
	return ts
}

// ReadTokenSet reads a token set from path (LoadTokenSet for programs,
// which may name any file).
func ReadTokenSet(path string) (TokenSet, error) {
	var ts TokenSet
	data, err := os.ReadFile(path)
	if err != nil {
		return ts, fmt.Errorf("token set: %w", err)
	}
	if err := json.Unmarshal(data, &ts); err != nil {
		return ts, fmt.Errorf("token set %s: %w", path, err)
	}
	return ts, nil
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
