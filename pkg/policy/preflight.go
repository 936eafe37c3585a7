package policy

import "net/http"

// Preflight reports whether a request is a CORS preflight, which browsers
// send without cookies or credentials, so it can never carry a session: an
// OPTIONS request with Access-Control-Request-Method (the Fetch standard's
// definition) and with Origin, which browsers always add to one. Requiring
// both keeps "preflight: allow" to what browsers send; any other OPTIONS
// request is authenticated as usual. The values are not judged: the
// upstream answers the preflight, and whatever it answers, the request that
// follows is checked on its own.
func Preflight(method string, h http.Header) bool {
	return method == http.MethodOptions &&
		h.Get("Access-Control-Request-Method") != "" &&
		h.Get("Origin") != ""
}
