package session

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

var (
	// ErrNotFound means the store holds no session for the ticket: it was
	// signed out, ended by invalid_grant, or expired.
	ErrNotFound = errors.New("session: not in the store")
	// ErrUnavailable means the server-side store could not be reached (after
	// the backend's retries). The session may well be valid: the cookie is
	// left alone.
	ErrUnavailable = errors.New("session: store unavailable")
)

// Backend keeps encrypted sessions server-side (Redis). Get returns
// ErrNotFound for a missing key; every other error means unreachable.
type Backend interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// A ticket names a server-side session and holds the key that encrypts it:
// the store alone (a Redis dump) reveals no token, and the cookie alone
// holds none.
type ticket struct {
	id  [16]byte
	key [32]byte
}

const ticketLen = 16 + 32

// TicketStore keeps sessions in a Backend and only a ticket in the cookie:
// for sessions too large for cookies (Entra ID with many groups), and so
// that a refresh needs no new cookie at all.
type TicketStore struct {
	cookies *Store // the ticket cookie's layout and attributes
	backend Backend
	prefix  string // of the backend's keys
	rand    io.Reader
}

// NewTicketStore keeps sessions in backend under prefix+"session:"+id; the
// ticket cookie is sealed with codec. rand makes ticket IDs and keys.
func NewTicketStore(codec *Codec, opts Options, backend Backend, prefix string, rand io.Reader, now func() time.Time) *TicketStore {
	return &TicketStore{cookies: NewStore(codec, opts, now), backend: backend, prefix: prefix + "session:", rand: rand}
}

// Load reads the ticket and fetches the session it names. Errors:
// ErrNoSession, ErrInvalid, ErrExpired, ErrNotFound and ErrUnavailable.
func (s *TicketStore) Load(r *http.Request) (*State, error) {
	t, err := s.readTicket(r)
	if err != nil {
		return nil, err
	}
	key := s.key(t)
	blob, err := s.backend.Get(r.Context(), key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	plain, err := t.open(blob, key)
	if err != nil {
		return nil, ErrInvalid
	}
	st := new(State)
	if err := st.unmarshalOwned(plain); err != nil {
		return nil, ErrInvalid
	}
	if st.Expired(s.cookies.now()) {
		return nil, ErrExpired
	}
	st.ticket = t
	return st, nil
}

func (s *TicketStore) readTicket(r *http.Request) (*ticket, error) {
	value, ok := cookieValue(r.Header, s.cookies.opts.Name)
	if !ok || value == "" {
		return nil, ErrNoSession
	}
	raw, err := s.cookies.codec.Open(s.cookies.opts.Name, value)
	if err != nil || len(raw) != ticketLen {
		return nil, ErrInvalid
	}
	t := new(ticket)
	copy(t.id[:], raw[:16])
	copy(t.key[:], raw[16:])
	return t, nil
}

// Save stores a new session under a new ticket and sets the ticket cookie.
// It returns the cookie's size in bytes.
func (s *TicketStore) Save(w http.ResponseWriter, r *http.Request, st *State) (int, error) {
	t := new(ticket)
	if _, err := io.ReadFull(s.rand, t.id[:]); err != nil {
		return 0, fmt.Errorf("session: ticket id: %w", err)
	}
	if _, err := io.ReadFull(s.rand, t.key[:]); err != nil {
		return 0, fmt.Errorf("session: ticket key: %w", err)
	}
	saved := *st
	saved.ticket = t
	if err := s.put(r.Context(), &saved); err != nil {
		return 0, err
	}
	raw := make([]byte, 0, ticketLen)
	raw = append(append(raw, t.id[:]...), t.key[:]...)
	value, err := s.cookies.codec.Seal(s.cookies.opts.Name, raw)
	if err != nil {
		return 0, err
	}
	maxAge := int(st.ExpiresAt.Sub(s.cookies.now()) / time.Second)
	sealed := &Sealed{
		lines: []string{s.cookies.cookie(s.cookies.opts.Name, value, maxAge).String()},
		names: []string{s.cookies.opts.Name},
		Size:  len(value),
	}
	// Expires the cookies of a cookie-store session the browser may still carry.
	s.cookies.WriteSealed(w, r, sealed)
	return sealed.Size, nil
}

// Seal stores st, the refreshed state of a loaded session, under its
// ticket. The cookie stays as it is: the Sealed has nothing to write.
func (s *TicketStore) Seal(ctx context.Context, st *State) (*Sealed, error) {
	if st.ticket == nil {
		return nil, errors.New("session: state has no ticket")
	}
	if err := s.put(ctx, st); err != nil {
		return nil, err
	}
	return &Sealed{}, nil
}

// Shared answers a check that got st from another check's refresh: that
// refresh stored it already, and a second write could put back an older
// state over a newer one.
func (s *TicketStore) Shared(*State) (*Sealed, error) { return &Sealed{}, nil }

// WriteSealed sets the cookie of a Sealed from Save; the Sealed of a
// refresh has none.
func (s *TicketStore) WriteSealed(w http.ResponseWriter, r *http.Request, sealed *Sealed) {
	if len(sealed.lines) > 0 {
		s.cookies.WriteSealed(w, r, sealed)
	}
}

// Delete removes the request's session from the store: a copy of the
// ticket cookie then finds nothing.
func (s *TicketStore) Delete(ctx context.Context, r *http.Request) error {
	t, err := s.readTicket(r)
	if err != nil {
		return err
	}
	if err := s.backend.Delete(ctx, s.key(t)); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Clear deletes the request's session from the store (best effort: it
// expires anyway) and expires its cookies.
func (s *TicketStore) Clear(w http.ResponseWriter, r *http.Request) {
	_ = s.Delete(context.WithoutCancel(r.Context()), r)
	s.cookies.Clear(w, r)
}

// IDToken returns the session's ID token.
func (s *TicketStore) IDToken(_ *http.Request, st *State) string { return st.Tokens().IDToken }

// put encrypts st with its ticket's key and stores it until the session ends.
func (s *TicketStore) put(ctx context.Context, st *State) error {
	ttl := st.ExpiresAt.Sub(s.cookies.now())
	if ttl <= 0 {
		return ErrExpired
	}
	plain, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	key := s.key(st.ticket)
	blob, err := st.ticket.seal(plain, key, s.rand)
	if err != nil {
		return err
	}
	if err := s.backend.Set(ctx, key, blob, ttl); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func (s *TicketStore) key(t *ticket) string {
	return s.prefix + b64.EncodeToString(t.id[:])
}

// seal encrypts plain with the ticket's key (AES-256-GCM), bound to the
// store key it is written under: nonce(12) | ciphertext.
func (t *ticket) seal(plain []byte, storeKey string, rand io.Reader) ([]byte, error) {
	aead, err := t.aead()
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	buf := make([]byte, ns, ns+len(plain)+aead.Overhead())
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, fmt.Errorf("session: read nonce: %w", err)
	}
	return aead.Seal(buf, buf[:ns], plain, []byte(storeKey)), nil
}

func (t *ticket) open(blob []byte, storeKey string) ([]byte, error) {
	aead, err := t.aead()
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(blob) < ns+aead.Overhead() {
		return nil, ErrInvalid
	}
	return aead.Open(blob[ns:ns], blob[:ns], blob[ns:], []byte(storeKey))
}

func (t *ticket) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(t.key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
