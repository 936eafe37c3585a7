package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// Keep is session.storeTokens: which of the provider's tokens a session keeps.
type Keep struct{ AccessToken, IDToken, RefreshToken bool }

// UserinfoSource is the provider's userinfo endpoint.
type UserinfoSource interface {
	Userinfo(ctx context.Context, accessToken string) (*oidc.UserInfo, error)
}

// GroupsSource reads a user's groups where the token could not carry
// them: Microsoft Graph for Entra ID's group overage.
type GroupsSource interface {
	MemberGroups(ctx context.Context, accessToken string) ([]string, error)
}

// Builder makes sessions from what a provider states; its fields come
// from the configuration (oidc.claims, session.storeTokens, session.maxAge).
type Builder struct {
	Names  Names
	Keep   Keep
	MaxAge time.Duration
	// Userinfo is asked for the claims an ID token lacks (some providers
	// put email, groups or names only there): once at sign-in and once
	// per refresh, never on the check.
	Userinfo UserinfoSource
	// Groups is asked for the groups of a token with a group overage; nil:
	// such a user has no groups (and group rules refuse them).
	Groups GroupsSource
	// Log gets the userinfo failures a sign-in or refresh goes on
	// without; nil: they are not logged.
	Log *slog.Logger
}

var (
	// ErrUserinfoSubject: the userinfo endpoint answered for another user.
	ErrUserinfoSubject = errors.New("userinfo sub differs from the id token's")
	// ErrSubject: a refreshed ID token is for another user.
	ErrSubject = errors.New("refreshed id token is for another subject")
)

// SignIn makes a new session from a verified ID token and the tokens of
// the code exchange: the claims of the ID token, filled from userinfo
// where it lacks some (a userinfo failure leaves them unset: the policy
// decides), created now and ending after session.maxAge.
func (b *Builder) SignIn(ctx context.Context, idTok *oidc.IDToken, tokens *provider.Tokens, sessionID string, now time.Time) (*session.State, error) {
	claims, err := Decode(idTok)
	if err != nil {
		return nil, fmt.Errorf("id token claims: %w", err)
	}
	id := b.Names.Read(claims)
	fromUserinfo := false
	if !id.Complete() && tokens.AccessToken != "" {
		extra, err := b.userinfo(ctx, idTok.Subject, tokens.AccessToken)
		switch {
		case errors.Is(err, ErrUserinfoSubject):
			return nil, err
		case err != nil:
			b.log().Warn("userinfo failed; continuing with the ID token's claims", "error", err)
		default:
			id.Fill(extra)
			fromUserinfo = true
		}
	}
	if id.groupsOverage && id.present&fieldGroups == 0 {
		b.overageGroups(ctx, &id, tokens.AccessToken, idTok.Subject)
	}
	sid, _ := claims["sid"].(string)
	st := &session.State{
		ID:                 sessionID,
		Subject:            idTok.Subject,
		SID:                sid,
		ClaimsFromUserinfo: fromUserinfo,
		CreatedAt:          now,
		ExpiresAt:          now.Add(b.MaxAge),
	}
	id.apply(st)
	b.setTokens(st, nil, tokens)
	return st, nil
}

// Refreshed makes the session that follows prev after a refresh: the new
// tokens (per session.storeTokens), and the identity as the provider
// states it now. idTok is the refreshed ID token, verified, or nil when
// the refresh returned none. Its claims win even when empty ("groups": []
// removes every group, email_verified false the email); claims that
// sign-in took from userinfo are read there again; what neither states
// keeps its value. Times, ID and the rest carry over. An error means the
// provider's answers cannot be believed: the session is over.
func (b *Builder) Refreshed(ctx context.Context, prev *session.State, idTok *oidc.IDToken, tokens *provider.Tokens) (*session.State, error) {
	next := *prev
	var id Identity
	if idTok != nil {
		if idTok.Subject != prev.Subject {
			return nil, ErrSubject
		}
		claims, err := Decode(idTok)
		if err != nil {
			return nil, fmt.Errorf("refreshed id token claims: %w", err)
		}
		id = b.Names.Read(claims)
		if sid, _ := claims["sid"].(string); sid != "" {
			next.SID = sid
		}
	}
	if next.ClaimsFromUserinfo && !id.Complete() && tokens.AccessToken != "" {
		extra, err := b.userinfo(ctx, next.Subject, tokens.AccessToken)
		switch {
		case errors.Is(err, ErrUserinfoSubject):
			return nil, err
		case err != nil:
			// The tokens are new and the provider's verdict stands; the
			// claims are read again at the next refresh.
			b.log().Warn("userinfo failed during a refresh; claims keep their values until the next one", "sub", next.Subject, "error", err)
		default:
			id.Fill(extra)
		}
	}
	if id.groupsOverage && id.present&fieldGroups == 0 {
		// A failure keeps the groups the session had (Fill below).
		b.overageGroups(ctx, &id, tokens.AccessToken, next.Subject)
	}
	id.Fill(of(&next))
	id.apply(&next)
	b.setTokens(&next, prev, tokens)
	return &next, nil
}

// overageGroups reads the groups of a token with a group overage into id.
// When they cannot be read, id's groups stay unstated: at sign-in the
// session has none, so group rules refuse it (closed, not a 5xx); at a
// refresh the session keeps the groups it had.
func (b *Builder) overageGroups(ctx context.Context, id *Identity, accessToken, sub string) {
	if b.Groups == nil {
		b.log().Warn("the token names no groups because the user has too many (group overage), and no source is configured to read them", "sub", sub)
		return
	}
	groups, err := b.Groups.MemberGroups(ctx, accessToken)
	if err != nil {
		b.log().Warn("group overage: the groups could not be read from Microsoft Graph; group rules refuse this user until they can", "sub", sub, "error", err)
		return
	}
	b.log().Info("group overage: groups read from Microsoft Graph", "sub", sub, "groups", len(groups))
	id.Groups, id.present = groups, id.present|fieldGroups
}

// Bearer is the one-check session a verified bearer token stands for.
func (b *Builder) Bearer(tok *oidc.IDToken) (*session.State, error) {
	claims, err := Decode(tok)
	if err != nil {
		return nil, fmt.Errorf("bearer token claims: %w", err)
	}
	st := &session.State{Subject: tok.Subject}
	b.Names.Read(claims).apply(st)
	return st, nil
}

// setTokens keeps the tokens session.storeTokens names and records when
// the access token expires and how long it was issued for. After a
// refresh (prev set) without a new ID token the old one stays, for
// id_token_hint; one kept in its own cookie (IDTokenApart) stays there,
// written at sign-in and left alone so that a refresh fits one Set-Cookie.
func (b *Builder) setTokens(st, prev *session.State, tokens *provider.Tokens) {
	var kept session.Tokens
	if b.Keep.AccessToken {
		kept.AccessToken = tokens.AccessToken
	}
	if b.Keep.IDToken {
		kept.IDToken = tokens.IDToken
	}
	if b.Keep.RefreshToken {
		kept.RefreshToken = tokens.RefreshToken
	}
	if prev != nil {
		if prev.IDTokenApart {
			kept.IDToken = ""
		} else if kept.IDToken == "" && b.Keep.IDToken {
			kept.IDToken = prev.Tokens().IDToken
		}
	}
	st.SetTokens(kept)
	st.AccessExpiry, st.AccessLifetime = tokens.Expiry, tokens.Lifetime
}

func (b *Builder) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// userinfo reads the identity claims of the userinfo endpoint, whose sub
// must be the ID token's.
func (b *Builder) userinfo(ctx context.Context, sub, accessToken string) (Identity, error) {
	if b.Userinfo == nil {
		return Identity{}, errors.New("no userinfo endpoint")
	}
	info, err := b.Userinfo.Userinfo(ctx, accessToken)
	if err != nil {
		return Identity{}, err
	}
	if info.Subject != sub {
		return Identity{}, ErrUserinfoSubject
	}
	claims, err := Decode(info)
	if err != nil {
		return Identity{}, fmt.Errorf("userinfo claims: %w", err)
	}
	return b.Names.Read(claims), nil
}

// of is a session's identity, every field stated.
func of(st *session.State) Identity {
	return Identity{User: st.User, Email: st.Email, PreferredUsername: st.PreferredUsername, Groups: st.Groups, Claims: st.Claims, present: allFields}
}

// apply writes the identity into a state.
func (id Identity) apply(st *session.State) {
	st.User, st.Email, st.PreferredUsername, st.Groups = id.User, id.Email, id.PreferredUsername, id.Groups
	st.Claims = nil
	if len(id.Claims) > 0 {
		st.Claims = id.Claims
	}
}
