package redisstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/refresh"
)

// Lock lease: the leader renews it every leaseRenew while its token
// request runs, so a slow provider never lets a second replica in (a lock
// that simply expires after two seconds does, and the second replica then
// replays the rotated token); a replica that dies frees it within lease.
const (
	defaultLease = 3 * time.Second
	// pollMin and pollMax bound how often a waiting replica looks for the
	// result: the first looks are quick, a slow provider is not hammered.
	pollMin = 5 * time.Millisecond
	pollMax = 50 * time.Millisecond
)

// takeOrRead returns {1, result} when a result is published, {2} when it
// took the lock, {0} when another holds it. KEYS: lock, result (one hash
// slot: both carry the same {tag}); ARGV: token, lease ms.
var takeOrRead = redis.NewScript(`
local r = redis.call("GET", KEYS[2])
if r then return {1, r} end
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return {2} end
return {0}`)

// renewLock extends the lease while we still hold it; release deletes it
// only if it is ours.
var (
	renewLock = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0`)
	releaseLock = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`)
)

// Coordinator runs one refresh per refresh token across all replicas that
// share the Redis, and publishes its result for the reuse window.
type Coordinator struct {
	*Store
	window time.Duration
	lease  time.Duration // renewed every lease/3
}

// NewCoordinator keeps results for window (session.refreshReuseWindow).
func NewCoordinator(s *Store, window time.Duration) *Coordinator {
	return &Coordinator{Store: s, window: max(window, time.Second), lease: defaultLease}
}

// Do returns the result of redeeming refreshToken: published by any
// replica within the window, or awaited while another replica holds the
// lock, or made by redeem under the lock and then published. shared says
// it came from another replica. When Redis cannot be reached before redeem
// runs, Do returns refresh.ErrUnavailable and the caller refreshes alone.
//
// Results are sealed with a key derived from refreshToken: only a holder
// of the token they replace can read them.
func (c *Coordinator) Do(ctx context.Context, refreshToken string, redeem func(context.Context) ([]byte, error)) ([]byte, bool, error) {
	sum := sha256.Sum256([]byte(refreshToken))
	tag := "{" + hex.EncodeToString(sum[:]) + "}"
	lockKey, resultKey := c.prefix+"refresh:"+tag+":lock", c.prefix+"refresh:"+tag+":result"
	aead, err := resultAEAD(refreshToken)
	if err != nil {
		return nil, false, err
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])

	begin := time.Now()
	waited := false
	poll := pollMin
	for {
		start := time.Now()
		res, err := takeOrRead.Run(ctx, c.client, []string{lockKey, resultKey}, token, c.lease.Milliseconds()).Slice()
		c.observe(metrics.StoreRefreshLock, start, err)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, fmt.Errorf("%w: %w", refresh.ErrUnavailable, errorf("refresh lock", err))
		}
		switch code, _ := res[0].(int64); code {
		case 1:
			if waited {
				c.metrics.RefreshLockWait.Observe(time.Since(begin).Seconds())
			}
			blob, _ := res[1].(string)
			payload, err := openResult(aead, []byte(blob), resultKey)
			if err != nil {
				return nil, false, err
			}
			return payload, true, nil
		case 2:
			if waited {
				c.metrics.RefreshLockWait.Observe(time.Since(begin).Seconds())
			}
			payload, err := c.lead(ctx, lockKey, resultKey, token, aead, redeem)
			return payload, false, err
		}
		// Another replica redeems: wait for its result, or for its lock to
		// go (it failed, or died) and take over.
		waited = true
		select {
		case <-ctx.Done():
			c.metrics.RefreshLockWait.Observe(time.Since(begin).Seconds())
			return nil, false, fmt.Errorf("waiting for another replica's refresh: %w", ctx.Err())
		case <-time.After(poll):
		}
		poll = min(2*poll, pollMax)
	}
}

// lead runs redeem while renewing the lock, publishes a result, and
// releases the lock (after publishing, so that waiters find the result).
func (c *Coordinator) lead(ctx context.Context, lockKey, resultKey, token string, aead cipher.AEAD, redeem func(context.Context) ([]byte, error)) ([]byte, error) {
	bg := context.WithoutCancel(ctx)
	stop := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(c.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rctx, cancel := opContext(bg)
				start := time.Now()
				n, err := renewLock.Run(rctx, c.client, []string{lockKey}, token, c.lease.Milliseconds()).Int()
				cancel()
				c.observe(metrics.StoreRefreshLock, start, err)
				if err == nil && n == 0 {
					c.log.Warn("refresh lock lost while the token request ran")
				}
			}
		}
	}()
	payload, err := redeem(ctx)
	close(stop)
	<-renewed

	if err == nil {
		blob, serr := sealResult(aead, payload, resultKey)
		if serr == nil {
			pctx, cancel := opContext(bg)
			start := time.Now()
			serr = c.client.Set(pctx, resultKey, blob, c.window).Err()
			cancel()
			c.observe(metrics.StoreRefreshResult, start, serr)
		}
		if serr != nil {
			// The refresh itself succeeded; replicas that miss the result
			// fall back on their own reuse window.
			c.log.Warn("could not publish a refresh result", "error", serr)
		}
	}
	rctx, cancel := opContext(bg)
	start := time.Now()
	rerr := releaseLock.Run(rctx, c.client, []string{lockKey}, token).Err()
	cancel()
	c.observe(metrics.StoreRefreshLock, start, rerr)
	return payload, err
}

const resultInfo = "extauth refresh result v1"

func resultAEAD(refreshToken string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(refreshToken), nil, resultInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealResult(aead cipher.AEAD, payload []byte, ad string) ([]byte, error) {
	ns := aead.NonceSize()
	buf := make([]byte, ns, ns+len(payload)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	return aead.Seal(buf, buf[:ns], payload, []byte(ad)), nil
}

var errBadResult = errors.New("redis: refresh result does not open")

func openResult(aead cipher.AEAD, blob []byte, ad string) ([]byte, error) {
	ns := aead.NonceSize()
	if len(blob) < ns+aead.Overhead() {
		return nil, errBadResult
	}
	p, err := aead.Open(nil, blob[:ns], blob[ns:], []byte(ad))
	if err != nil {
		return nil, errBadResult
	}
	return p, nil
}
