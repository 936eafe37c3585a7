package redisstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
)

// Logouts is a logout.Store shared by every replica. Records are written
// to Redis (with their expiry) and announced on a channel; each replica
// keeps them in memory, loaded in full whenever its subscription (re)starts,
// so the check reads no more than a map: a back-channel logout received by
// one replica ends the session on all within a message's latency.
type Logouts struct {
	*Store
	mem     *logout.Memory
	now     func() time.Time
	channel string

	synced chan struct{} // closed after the first full load
	once   sync.Once
}

var _ logout.Store = (*Logouts)(nil)

var kindNames = [...]string{logout.SID: "sid", logout.Subject: "sub", logout.Session: "session"}

// endRecord keeps the later of two records' times: KEYS[1]; ARGV: at (unix
// ms), ttl ms. Returns the time kept.
var endRecord = redis.NewScript(`
local at = ARGV[1]
local old = redis.call("GET", KEYS[1])
if old and tonumber(old) > tonumber(at) then at = old end
redis.call("SET", KEYS[1], at, "PX", ARGV[2])
return at`)

// endOnce is endRecord for a logout token, with its jti taken and the
// record announced in the same script, so that nothing is half done: a
// replayed jti records nothing (returns false), and a failure leaves the
// jti for the provider's retry. KEYS: jti, record; ARGV: jti ttl ms, at
// (unix ms), record ttl ms, channel, kind name, until (unix ms), key.
// Returns the time kept.
var endOnce = redis.NewScript(`
if not redis.call("SET", KEYS[1], 1, "NX", "PX", ARGV[1]) then return false end
local at = ARGV[2]
local old = redis.call("GET", KEYS[2])
if old and tonumber(old) > tonumber(at) then at = old end
redis.call("SET", KEYS[2], at, "PX", ARGV[3])
redis.call("PUBLISH", ARGV[4], ARGV[5] .. " " .. at .. " " .. ARGV[6] .. " " .. ARGV[7])
return at`)

// NewLogouts returns the shared records; Run follows the other replicas'.
func NewLogouts(s *Store, now func() time.Time) *Logouts {
	return &Logouts{Store: s, mem: logout.NewMemory(now), now: now, channel: s.prefix + "logouts", synced: make(chan struct{})}
}

// Synced is closed once the records in Redis have been loaded.
func (l *Logouts) Synced() <-chan struct{} { return l.synced }

func (l *Logouts) recordKey(kind logout.Kind, key string) string {
	return l.prefix + "logout:" + kindNames[kind] + ":" + key
}

// End implements logout.Store: the record holds here at once, in Redis
// until `until`, and on the other replicas when the announcement arrives.
func (l *Logouts) End(ctx context.Context, kind logout.Kind, key string, at, until time.Time) error {
	_ = l.mem.End(ctx, kind, key, at, until)
	ttl := until.Sub(l.now())
	if ttl <= 0 {
		return nil
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	start := time.Now()
	kept, err := endRecord.Run(ctx, l.client, []string{l.recordKey(kind, key)}, at.UnixMilli(), ttl.Milliseconds()).Text()
	if err == nil {
		msg := kindNames[kind] + " " + kept + " " + strconv.FormatInt(until.UnixMilli(), 10) + " " + key
		err = l.client.Publish(ctx, l.channel, msg).Err()
	}
	l.observe(metrics.StoreLogoutWrite, start, err)
	if err != nil {
		return errorf("record logout", err)
	}
	return nil
}

// Ended implements logout.Store from memory.
func (l *Logouts) Ended(ctx context.Context, kind logout.Kind, key string, createdAt time.Time) (bool, error) {
	return l.mem.Ended(ctx, kind, key, createdAt)
}

// EndOnce implements logout.Store: the jti is taken once across replicas,
// and with it the record is written and announced, in one script.
func (l *Logouts) EndOnce(ctx context.Context, jti string, jtiUntil time.Time, kind logout.Kind, key string, at, until time.Time) (bool, error) {
	jtiTTL := max(jtiUntil.Sub(l.now()), time.Millisecond)
	ttl := max(until.Sub(l.now()), time.Millisecond)
	ctx, cancel := opContext(ctx)
	defer cancel()
	start := time.Now()
	res, err := endOnce.Run(ctx, l.client, []string{l.prefix + "logout-jti:" + jti, l.recordKey(kind, key)},
		jtiTTL.Milliseconds(), at.UnixMilli(), ttl.Milliseconds(), l.channel,
		kindNames[kind], until.UnixMilli(), key).Text()
	if errors.Is(err, redis.Nil) {
		l.observe(metrics.StoreLogoutWrite, start, nil)
		return false, nil // a replay: the script returned false
	}
	l.observe(metrics.StoreLogoutWrite, start, err)
	if err != nil {
		return false, errorf("record logout", err)
	}
	kept, err := strconv.ParseInt(res, 10, 64)
	if err != nil {
		return false, errorf("record logout", err)
	}
	_ = l.mem.End(ctx, kind, key, time.UnixMilli(kept), until)
	return true, nil
}

// Run subscribes to the announcements until ctx ends, and loads every
// record each time the subscription starts: go-redis resubscribes after a
// lost connection, and what was announced meanwhile is in Redis.
func (l *Logouts) Run(ctx context.Context) {
	ps := l.client.Subscribe(ctx, l.channel)
	defer ps.Close()
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// go-redis reconnects on the next Receive; don't spin meanwhile.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				if err := l.load(ctx); err != nil {
					l.log.Warn("could not load the logout records from redis", "error", err)
					continue
				}
				l.once.Do(func() { close(l.synced) })
			}
		case *redis.Message:
			l.apply(m.Payload)
		}
	}
}

// apply reads an announcement: "<kind> <at ms> <until ms> <key>".
func (l *Logouts) apply(payload string) {
	parts := strings.SplitN(payload, " ", 4)
	if len(parts) != 4 {
		return
	}
	kind, ok := kindOf(parts[0])
	at, err1 := strconv.ParseInt(parts[1], 10, 64)
	until, err2 := strconv.ParseInt(parts[2], 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return
	}
	_ = l.mem.End(context.Background(), kind, parts[3], time.UnixMilli(at), time.UnixMilli(until))
}

// load reads every record in Redis into memory.
func (l *Logouts) load(ctx context.Context) error {
	start := time.Now()
	err := l.loadAll(ctx)
	l.observe(metrics.StoreLogoutSync, start, err)
	return err
}

func (l *Logouts) loadAll(ctx context.Context) error {
	base := l.prefix + "logout:"
	iter := l.client.Scan(ctx, 0, escapeGlob(base)+"*", 500).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		pipe := l.client.Pipeline()
		gets := make([]*redis.StringCmd, len(keys))
		ttls := make([]*redis.DurationCmd, len(keys))
		for i, k := range keys {
			gets[i] = pipe.Get(ctx, k)
			ttls[i] = pipe.PTTL(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		now := l.now()
		for i, k := range keys {
			at, err := gets[i].Int64()
			ttl := ttls[i].Val()
			kindName, key, ok := strings.Cut(strings.TrimPrefix(k, base), ":")
			kind, known := kindOf(kindName)
			if err != nil || ttl <= 0 || !ok || !known {
				continue
			}
			_ = l.mem.End(ctx, kind, key, time.UnixMilli(at), now.Add(ttl))
		}
		keys = keys[:0]
		return nil
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

func kindOf(name string) (logout.Kind, bool) {
	for k, n := range kindNames {
		if n == name {
			return logout.Kind(k), true
		}
	}
	return 0, false
}

// escapeGlob quotes SCAN MATCH's special characters in a literal prefix.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
