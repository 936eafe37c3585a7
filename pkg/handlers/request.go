package handlers

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/netip"
)

// requestID is nginx's X-Request-ID when it looks like one, else a new ID:
// the header is client-controlled on some paths and ends up in logs.
func requestID(r *http.Request, rnd io.Reader) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 128 && isToken(id) {
		return id
	}
	var b [8]byte
	_, _ = io.ReadFull(rnd, b[:])
	return hex.EncodeToString(b[:])
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// trustedPeer reports whether the direct peer is in server.trustedProxies,
// the only peers whose X-Forwarded-* headers are believed.
func (h *handler) trustedPeer(r *http.Request) bool {
	prefixes := h.trusted
	if len(prefixes) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// requestHost is the host the browser used: X-Forwarded-Host from a trusted
// proxy, else Host.
func (h *handler) requestHost(r *http.Request) string {
	if h.trustedPeer(r) {
		if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
			return fh
		}
	}
	return r.Host
}

// requestScheme is http or https as the browser used it.
func (h *handler) requestScheme(r *http.Request) string {
	if h.trustedPeer(r) {
		switch r.Header.Get("X-Forwarded-Proto") {
		case "https":
			return "https"
		case "http":
			return "http"
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// redirectURL is oidc.redirectURL, or the callback on the host the browser used.
func (h *handler) redirectURL(a *app, r *http.Request) string {
	if u := a.oidc.RedirectURL; u != "" {
		return u
	}
	return h.requestScheme(r) + "://" + h.requestHost(r) + h.prefix + "/callback"
}
