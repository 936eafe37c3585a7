package op

import (
	"context"
	"crypto/rand"
	"html/template"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

const (
	// loginPath is the login page: GET shows the form, the form POSTs back.
	loginPath = "/login/username"
	// queryAuthRequestID names the auth request on the login page URL.
	queryAuthRequestID = "authRequestID"
	// SessionCookie is the provider session cookie set after a successful
	// login (HttpOnly, Path=/, SameSite=Lax, session cookie). Note that
	// browsers do not scope cookies by port: it is sent to every
	// 127.0.0.1 service.
	SessionCookie = "op_session"
)

// loginTemplate is the example's login page (exampleop/templates/login.html),
// with ids added to the form and button for browser tests.
var loginTemplate = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html>
    <head>
        <meta charset="UTF-8">
        <title>Login</title>
    </head>
    <body style="display: flex; align-items: center; justify-content: center; height: 100vh;">
        <form id="login-form" method="POST" action="/login/username" style="height: 200px; width: 200px;">

            <input type="hidden" name="id" value="{{.ID}}">

            <div>
                <label for="username">Username:</label>
                <input id="username" name="username" autocomplete="username" style="width: 100%">
            </div>

            <div>
                <label for="password">Password:</label>
                <input id="password" name="password" type="password" autocomplete="current-password" style="width: 100%">
            </div>

            <p id="login-error" style="color:red; min-height: 1rem;">{{.Error}}</p>

            <button id="login-submit" type="submit">Login</button>
        </form>
    </body>
</html>
`))

// session is a provider session: the user logged in with this browser.
type session struct {
	userID   string
	authTime time.Time
}

type sessionStore struct {
	mu sync.Mutex
	m  map[string]session
}

func (s *sessionStore) add(userID string) string {
	id := rand.Text()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[id] = session{userID: userID, authTime: time.Now()}
	return id
}

func (s *sessionStore) get(id string) (session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	return sess, ok
}

func (s *sessionStore) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	delete(s.m, id)
	return ok
}

// loginUI is the login page, like the example's (exampleop/login.go), plus
// the provider session.
type loginUI struct {
	store    *opStorage
	users    userStore
	sessions *sessionStore
	callback func(context.Context, string) string // op.AuthCallbackURL
}

func (l *loginUI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		l.show(w, r)
	case http.MethodPost:
		l.check(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// show renders the login form for the auth request, unless the browser has a
// live provider session and the request does not ask for a new login: then
// it completes the auth request for the session's user and redirects to the
// authorization callback, which redirects to the client with a code.
func (l *loginUI) show(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get(queryAuthRequestID)
	if sess, ok := l.session(r); ok && l.sessionSatisfies(r.Context(), sess, id) {
		user := l.users.GetUserByID(sess.userID)
		// Same path as a form login: this marks the auth request done for
		// the user (its auth_time becomes now).
		if user != nil && l.store.CheckUsernamePassword(user.Username, user.Password, id) == nil {
			http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
			return
		}
	}
	render(w, id, "")
}

func (l *loginUI) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return session{}, false
	}
	return l.sessions.get(c.Value)
}

// sessionSatisfies reports whether the session may complete the auth request
// without a login: not with prompt=login or select_account, nor when the
// session is older than max_age.
func (l *loginUI) sessionSatisfies(ctx context.Context, sess session, authRequestID string) bool {
	req, err := l.store.AuthRequestByID(ctx, authRequestID)
	if err != nil {
		return false
	}
	ar, ok := req.(*storage.AuthRequest)
	if !ok {
		return false
	}
	if slices.Contains(ar.Prompt, oidc.PromptLogin) || slices.Contains(ar.Prompt, oidc.PromptSelectAccount) {
		return false
	}
	if ar.MaxAuthAge != nil && time.Since(sess.authTime) > *ar.MaxAuthAge {
		return false
	}
	return true
}

// check handles the form POST, like the example's checkLoginHandler, and
// starts a provider session on success.
func (l *loginUI) check(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "cannot parse form: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PostForm.Get("id")
	err := l.store.CheckUsernamePassword(r.PostForm.Get("username"), r.PostForm.Get("password"), id)
	if err != nil {
		render(w, id, err.Error())
		return
	}
	req, err := l.store.AuthRequestByID(r.Context(), id)
	if err != nil {
		render(w, id, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: l.sessions.add(req.GetSubject()), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
}

func render(w http.ResponseWriter, id, errMsg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	data := struct{ ID, Error string }{ID: id, Error: errMsg}
	if err := loginTemplate.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
