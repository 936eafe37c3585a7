package refresh

import (
	"context"
	"errors"
	"fmt"

	"github.com/extauth/extauth/pkg/session"
)

// The result of a refresh as published to other replicas: the first byte,
// then the encoded state or the reason the session is over. A provider
// that is down publishes nothing: the next check tries again.
const (
	publishedState = 1
	publishedOver  = 2
)

// redeemShared redeems rt once across replicas when a Coordinator is
// configured: another replica's published result is taken as it is, and
// so is its verdict that the session is over. A Coordinator that is
// unreachable falls back to this process's single flight.
func (r *Refresher) redeemShared(ctx context.Context, st *session.State, rt string) (*result, error) {
	if r.cfg.Coordinator == nil {
		return r.redeem(ctx, st, rt)
	}
	var mine *result
	var myErr error
	ran := false
	payload, shared, err := r.cfg.Coordinator.Do(ctx, rt, func(ctx context.Context) ([]byte, error) {
		ran = true
		mine, myErr = r.redeem(ctx, st, rt)
		return publish(mine, myErr)
	})
	if ran {
		return mine, myErr
	}
	if errors.Is(err, ErrUnavailable) {
		r.cfg.Log.Warn("redis unavailable; refreshing without cross-replica coordination", "sub", st.Subject, "error", err)
		return r.redeem(ctx, st, rt)
	}
	if err != nil {
		return nil, err
	}
	if !shared || len(payload) == 0 {
		return nil, errors.New("refresh coordinator returned no result")
	}
	return unpublish(payload, st)
}

// publish encodes a redemption's outcome for the other replicas.
func publish(res *result, err error) ([]byte, error) {
	var over overErr
	switch {
	case err == nil:
		b, err := res.state.MarshalBinary()
		return append([]byte{publishedState}, b...), err
	case errors.As(err, &over):
		return append([]byte{publishedOver}, over.Error()...), nil
	default:
		return nil, err // the provider is down: nothing to publish
	}
}

// unpublish decodes another replica's outcome of refreshing st.
func unpublish(payload []byte, st *session.State) (*result, error) {
	switch payload[0] {
	case publishedOver:
		return nil, overErr{fmt.Errorf("another replica's refresh: %s", payload[1:])}
	case publishedState:
		next := new(session.State)
		if err := next.UnmarshalBinary(payload[1:]); err != nil {
			return nil, fmt.Errorf("another replica's refresh result: %w", err)
		}
		if next.ID != st.ID {
			return nil, errors.New("another replica's refresh result is for another session")
		}
		return &result{state: next, remote: true}, nil
	}
	return nil, errors.New("refresh coordinator returned an unknown result")
}
