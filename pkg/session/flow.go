package session

import (
	"crypto/subtle"
	"encoding/binary"
	"net/http"
	"time"
)

// Flow is one sign-in in flight: what /oauth2/start sent to the provider
// and what /oauth2/callback must find again in the same browser.
type Flow struct {
	State     string
	Nonce     string
	Verifier  string // PKCE code verifier (RFC 7636); empty without PKCE
	ReturnURL string
	// RedirectURL is the redirect_uri sent to the provider; the code
	// exchange must send the same (RFC 6749 §4.1.3), whichever host or
	// scheme the callback reaches us through.
	RedirectURL string
	Expires     time.Time
	// Consent says the authorization request carried prompt=consent, so
	// the callback does not restart the sign-in to ask for it.
	Consent bool
}

// Flows are the sign-ins in flight in one browser, oldest first. Several
// tabs may each start a sign-in; each must complete.
type Flows []Flow

const (
	// FlowTTL is how long a sign-in may take.
	FlowTTL = 15 * time.Minute
	// maxFlows bounds the flows one browser keeps; the oldest go first.
	maxFlows = 8
	// maxFlowCookieBytes keeps the flow cookie well inside one cookie.
	maxFlowCookieBytes = 3800
)

// The flow cookie's layouts: version 1 had no flags byte, version 2 ends
// each flow with one (flowConsent). Version 1 cookies, at most FlowTTL old
// after an upgrade, still decode.
const (
	flowsV1     = 1
	flowsV2     = 2
	flowConsent = 1 << 0
)

// MarshalBinary implements encoding.BinaryMarshaler.
func (f Flows) MarshalBinary() ([]byte, error) {
	b := []byte{flowsV2}
	for _, fl := range f {
		b = appendString(b, fl.State)
		b = appendString(b, fl.Nonce)
		b = appendString(b, fl.Verifier)
		b = appendString(b, fl.ReturnURL)
		b = appendString(b, fl.RedirectURL)
		b = binary.AppendVarint(b, fl.Expires.Unix())
		var flags byte
		if fl.Consent {
			flags |= flowConsent
		}
		b = append(b, flags)
	}
	return b, nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler.
func (f *Flows) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	version := d.byte()
	if version != flowsV1 && version != flowsV2 {
		return errCorrupt
	}
	var out Flows
	for len(d.b) > 0 && d.err == nil && len(out) <= maxFlows {
		fl := Flow{
			State:       d.string(),
			Nonce:       d.string(),
			Verifier:    d.string(),
			ReturnURL:   d.string(),
			RedirectURL: d.string(),
			Expires:     time.Unix(d.varint(), 0),
		}
		if version == flowsV2 {
			flags := d.byte()
			if flags&^flowConsent != 0 {
				return errCorrupt
			}
			fl.Consent = flags&flowConsent != 0
		}
		out = append(out, fl)
	}
	if d.err != nil || len(d.b) != 0 {
		return errCorrupt
	}
	*f = out
	return nil
}

// FlowStore keeps Flows in the cookie <session cookie name>_csrf.
type FlowStore struct {
	codec *Codec
	opts  Options
	now   func() time.Time
}

// NewFlowStore returns the flow cookie store. The flow cookie is SameSite=Lax
// even when the session cookie is Strict: the provider's redirect back to the
// callback is a cross-site navigation, which never carries Strict cookies.
func NewFlowStore(codec *Codec, opts Options, now func() time.Time) *FlowStore {
	opts.Name += "_csrf"
	if opts.SameSite != http.SameSiteNoneMode {
		opts.SameSite = http.SameSiteLaxMode
	}
	if opts.Path == "" {
		opts.Path = "/"
	}
	return &FlowStore{codec: codec, opts: opts, now: now}
}

// Load returns the flows of the request that have not expired; a missing or
// invalid cookie is no flows.
func (s *FlowStore) Load(r *http.Request) Flows {
	value, ok := cookieValue(r.Header, s.opts.Name)
	if !ok {
		return nil
	}
	var flows Flows
	if err := s.codec.Decode(s.opts.Name, value, &flows); err != nil {
		return nil
	}
	now := s.now()
	live := flows[:0]
	for _, f := range flows {
		if now.Before(f.Expires) {
			live = append(live, f)
		}
	}
	return live
}

// Add appends a flow, dropping the oldest while there are too many or the
// cookie would grow too large.
func (s *FlowStore) Add(w http.ResponseWriter, flows Flows, f Flow) error {
	flows = append(flows, f)
	if len(flows) > maxFlows {
		flows = flows[len(flows)-maxFlows:]
	}
	for {
		value, err := s.codec.Encode(s.opts.Name, flows)
		if err != nil {
			return err
		}
		if len(value) <= maxFlowCookieBytes || len(flows) == 1 {
			http.SetCookie(w, s.cookie(value, int(FlowTTL/time.Second)))
			return nil
		}
		flows = flows[1:]
	}
}

// Take finds the flow for state (constant-time compare), and writes the
// remaining flows back, or clears the cookie when none remain.
func (s *FlowStore) Take(w http.ResponseWriter, flows Flows, state string) (Flow, bool) {
	for i, f := range flows {
		if state != "" && subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) == 1 {
			rest := append(flows[:i:i], flows[i+1:]...)
			s.write(w, rest)
			return f, true
		}
	}
	return Flow{}, false
}

func (s *FlowStore) write(w http.ResponseWriter, flows Flows) {
	if len(flows) == 0 {
		http.SetCookie(w, s.cookie("", -1))
		return
	}
	value, err := s.codec.Encode(s.opts.Name, flows)
	if err != nil {
		http.SetCookie(w, s.cookie("", -1))
		return
	}
	http.SetCookie(w, s.cookie(value, int(FlowTTL/time.Second)))
}

func (s *FlowStore) cookie(value string, maxAge int) *http.Cookie {
	return s.opts.cookie(s.opts.Name, value, maxAge)
}
