package session

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzCookie feeds arbitrary Cookie headers to Load: never a panic, and
// nothing but a session we sealed is ever accepted.
func FuzzCookie(f *testing.F) {
	now := t0
	store := newTestStore(f, &now)
	rec := httptest.NewRecorder()
	st := &State{Subject: "s", User: "s", Email: "a@b.c", Groups: []string{"g"}, tokens: Tokens{AccessToken: "a.b.c"}, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st); err != nil {
		f.Fatal(err)
	}
	good := rec.Result().Cookies()[0].Value
	for _, seed := range []string{
		"_extauth=" + good, "_extauth=" + good[:len(good)-1], "_extauth_0=" + good[:40] + "; _extauth_1=" + good[40:],
		"_extauth=", "_extauth=\"\"", "a=b; _extauth=AAAA", "_extauth_0=x; _extauth_2=y", "_extauth=" + good + good,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Cookie"] = []string{header}
		got, err := store.Load(r)
		if err == nil && got.Subject != "s" {
			t.Fatalf("accepted a state we never sealed: %+v", got)
		}
	})
}

// FuzzStateDecode feeds arbitrary plaintexts to the state decoder (what an
// attacker holding a secret could make): never a panic, and whatever decodes
// re-encodes to a state that decodes to the same thing.
func FuzzStateDecode(f *testing.F) {
	for _, st := range []State{
		{},
		{Subject: "s", Groups: []string{"a", "b"}, tokens: Tokens{AccessToken: "eyJh.eyJi.c2ln", RefreshToken: "opaque"}, CreatedAt: t0, ExpiresAt: t0},
	} {
		b, _ := st.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var st State
		if err := st.UnmarshalBinary(data); err != nil {
			return
		}
		again, err := st.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var st2 State
		if err := st2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !equalState(&st, &st2) {
			t.Fatalf("state changed across a round trip:\n%+v\n%+v", st, st2)
		}
	})
}

func BenchmarkLoadOkta(b *testing.B) {
	now := t0
	store := newTestStore(b, &now)
	rec := httptest.NewRecorder()
	if _, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), stateFromTokenSet(b, "okta")); err != nil {
		b.Fatal(err)
	}
	r := requestWith(rec)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := store.Load(r); err != nil {
			b.Fatal(err)
		}
	}
}
