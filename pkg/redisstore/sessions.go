package redisstore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/session"
)

// Sessions is the session.Backend of session.store redis. The values it
// keeps are already encrypted by session.TicketStore.
type Sessions struct{ *Store }

var _ session.Backend = Sessions{}

// Get implements session.Backend. It runs on every check: the client's own
// dial, I/O and pool timeouts with its two retries bound it, without the
// cost of a context deadline per call.
func (s Sessions) Get(ctx context.Context, key string) ([]byte, error) {
	start := time.Now()
	b, err := s.client.Get(ctx, key).Bytes()
	s.observe(metrics.StoreSessionGet, start, err)
	if errors.Is(err, redis.Nil) {
		return nil, session.ErrNotFound
	}
	if err != nil {
		return nil, errorf("get session", err)
	}
	return b, nil
}

// Set implements session.Backend.
func (s Sessions) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ctx, cancel := opContext(ctx)
	defer cancel()
	start := time.Now()
	err := s.client.Set(ctx, key, value, ttl).Err()
	s.observe(metrics.StoreSessionSet, start, err)
	if err != nil {
		return errorf("set session", err)
	}
	return nil
}

// Delete implements session.Backend.
func (s Sessions) Delete(ctx context.Context, key string) error {
	ctx, cancel := opContext(ctx)
	defer cancel()
	start := time.Now()
	err := s.client.Del(ctx, key).Err()
	s.observe(metrics.StoreSessionDelete, start, err)
	if err != nil {
		return errorf("delete session", err)
	}
	return nil
}
