package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// caseDef is one row of the table.
type caseDef struct {
	key, name, what string
	service         func(context.Context) (*service, error) // nil: no auth process
	viaNginx        bool
	path            string // direct: the check's path
	cookie          func() string
	want            int    // the status the client must see
	unavailable     string // set: the row only says why
}

func (b *bench) cases() []caseDef {
	o2pWhy := b.o2pWhy
	noCookie := func() string { return "" }
	extauthCookie := func() string { return b.cookie }
	o2pCookie := func() string { return b.o2pCookie }
	redisCookie := func() string { return b.redisCookie }
	return []caseDef{
		{key: "floor-nginx", name: "1. floor-nginx", what: "nginx auth_request to a location that answers 200 itself", viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "floor-go", name: "2. floor-go", what: "nginx auth_request → minimal Go net/http server answering 200", service: b.startFloorGo, viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "extauth", name: "3. extauth", what: "nginx auth_request → extauth /oauth2/auth, valid Okta-sized session", service: b.startExtauth, viaNginx: true, cookie: extauthCookie, want: 200},
		{key: "oauth2-proxy", name: "4. oauth2-proxy " + b.o.o2pVersion, what: "nginx auth_request → oauth2-proxy /oauth2/auth, valid session", service: b.startOAuth2Proxy, viaNginx: true, cookie: o2pCookie, want: 200, unavailable: o2pWhy},
		{key: "extauth-direct", name: "5. extauth, direct", what: "GET /oauth2/auth on extauth, no nginx", service: b.startExtauth, path: "/oauth2/auth", cookie: extauthCookie, want: 200},
		{key: "oauth2-proxy-direct", name: "6. oauth2-proxy, direct", what: "GET /oauth2/auth on oauth2-proxy, no nginx (202)", service: b.startOAuth2Proxy, path: "/oauth2/auth", cookie: o2pCookie, want: 202, unavailable: o2pWhy},
		{key: "extauth-401", name: "7. extauth 401 path", what: "no cookie, through nginx: extauth 401 → nginx 302 to /oauth2/start", service: b.startExtauth, viaNginx: true, cookie: noCookie, want: 302},
		{key: "extauth-redis", name: "8. extauth, redis store", what: "nginx auth_request → extauth /oauth2/auth with `session.store: redis` (redis-server on loopback, no persistence); the session from a real sign-in against the fake provider, the cookie a ticket", service: b.startExtauthRedis, viaNginx: true, cookie: redisCookie, want: 200, unavailable: b.redisWhy},
		{key: "floor-go-direct", name: "9. floor-go, direct", what: "GET on the minimal Go server, no nginx (the limit for case 5)", service: b.startFloorGo, path: "/oauth2/auth", cookie: extauthCookie, want: 200},
	}
}

// selectCases is b.cases() narrowed by -cases.
func (b *bench) selectCases() ([]caseDef, error) {
	all := b.cases()
	if b.o.only == "" {
		return all, nil
	}
	var out []caseDef
	for _, k := range strings.Split(b.o.only, ",") {
		k = strings.TrimSpace(k)
		i := slices.IndexFunc(all, func(c caseDef) bool { return c.key == k })
		if i < 0 {
			return nil, fmt.Errorf("-cases: no case %q", k)
		}
		out = append(out, all[i])
	}
	return out, nil
}
