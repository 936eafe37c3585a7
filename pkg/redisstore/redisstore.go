// Package redisstore is the state extauth replicas share through Redis:
// server-side sessions (session.Backend), one refresh per refresh token
// whichever replica gets the checks (Coordinator), and logout records that
// reach every replica (Logouts).
//
// Every value written holds no readable token: sessions are encrypted with
// a key that only the browser's cookie holds, refresh results with a key
// derived from the refresh token they replace.
package redisstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/pkg/metrics"
)

// Timeouts: a check waits for Redis, and nginx waits for the check. A Redis
// that is down must cost a check a short retry, not seconds.
const (
	dialTimeout = 500 * time.Millisecond
	ioTimeout   = 500 * time.Millisecond
	// opTimeout bounds one operation with its retries.
	opTimeout = 1500 * time.Millisecond
)

// Store is a connection to Redis and the metrics of its use.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	metrics *metrics.Metrics
	log     *slog.Logger
}

// Options say which Redis to use and how to reach it (server.New fills
// them from session.redis).
type Options struct {
	// Address is host:port. Unused with MasterName.
	Address string
	// MasterName, when set, finds the master through the Sentinels at
	// SentinelAddresses (host:port), which SentinelPassword, if any,
	// authenticates to.
	MasterName        string
	SentinelAddresses []string
	SentinelPassword  string
	// Username (an ACL user, Redis 6+) and Password authenticate to Redis;
	// empty: the default user, no password.
	Username string
	Password string
	// DB is the database number.
	DB int
	// KeyPrefix prefixes every key the Store writes.
	KeyPrefix string
	// TLS, when not nil, connects to Redis (and the Sentinels) with TLS.
	TLS *TLS
}

// TLS configures TLS to Redis and to the Sentinels.
type TLS struct {
	// CAPEM is a PEM CA bundle for the server's certificate; empty: the
	// system's roots.
	CAPEM []byte
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
	// InsecureSkipVerify turns certificate checks off: for tests only.
	InsecureSkipVerify bool
}

// New connects (lazily) to the Redis of o: one server, or a master found
// through Sentinel; with password and TLS when given.
func New(o Options, m *metrics.Metrics, log *slog.Logger) (*Store, error) {
	opts := &redis.UniversalOptions{
		Addrs:            []string{o.Address},
		Username:         o.Username,
		Password:         o.Password,
		DB:               o.DB,
		MasterName:       o.MasterName,
		SentinelPassword: o.SentinelPassword,
		ClientName:       "extauth",
		DialTimeout:      dialTimeout,
		ReadTimeout:      ioTimeout,
		WriteTimeout:     ioTimeout,
		// go-redis retries a failed command twice and a failed dial once,
		// with short backoffs: a blip is ridden out, an outage is not waited on.
		MaxRetries:            2,
		MinRetryBackoff:       10 * time.Millisecond,
		MaxRetryBackoff:       100 * time.Millisecond,
		DialerRetries:         1,
		DialerRetryTimeout:    50 * time.Millisecond,
		ContextTimeoutEnabled: true,
		PoolTimeout:           opTimeout,
		// CLIENT SETINFO is unknown to older servers and proxies.
		DisableIdentity: true,
		// RESP2: no push frames arrive between commands (RESP3's tracking
		// and maintenance notifications), which the Dialer below relies on.
		Protocol: 2,
		// A session is a few KB (Entra ID's with 40 groups about 9 KB):
		// 16 KiB buffers instead of 32 keep a pool of connections small;
		// larger values still pass, through more reads.
		ReadBufferSize:  16 << 10,
		WriteBufferSize: 16 << 10,
	}
	if o.MasterName != "" {
		opts.Addrs = o.SentinelAddresses
	}
	if o.TLS == nil {
		// go-redis peeks at a pooled connection (a recvfrom syscall) before
		// every command to see whether the server closed it: on the Redis
		// store's check path, a third syscall beside the command's write and
		// read. A connection that hides its file descriptor skips the peek
		// (as TLS connections always do); a connection the server closed
		// then fails its command, which go-redis retries on a new one.
		opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return unpeekedConn{c}, nil
		}
	}
	if o.TLS != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.TLS.ServerName, InsecureSkipVerify: o.TLS.InsecureSkipVerify}
		if len(o.TLS.CAPEM) > 0 {
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(o.TLS.CAPEM) {
				return nil, errors.New("tls: no PEM certificate in the CA bundle")
			}
		}
		opts.TLSConfig = tc
	}
	logOnce.Do(func() { redis.SetLogger(clientLogger{log}) })
	return &Store{client: redis.NewUniversalClient(opts), prefix: o.KeyPrefix, metrics: m, log: log}, nil
}

// go-redis logs through one package-level logger: route it, once, to slog
// at debug level (our own warnings say what failed, with the metrics).
var logOnce sync.Once

type clientLogger struct{ log *slog.Logger }

func (l clientLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// unpeekedConn is a net.Conn without SyscallConn; see the Dialer in New.
type unpeekedConn struct{ net.Conn }

// Close closes the connections.
func (s *Store) Close() error { return s.client.Close() }

// Ping reports whether Redis answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	err := s.client.Ping(ctx).Err()
	s.observe(metrics.StorePing, start, err)
	return err
}

// observe counts one operation and its latency; redis.Nil is not_found.
func (s *Store) observe(op string, start time.Time, err error) {
	result := metrics.StoreOK
	switch {
	case errors.Is(err, redis.Nil):
		result = metrics.StoreNotFound
	case err != nil:
		result = metrics.StoreError
	}
	s.metrics.StoreLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	s.metrics.StoreOperations.WithLabelValues(op, result).Inc()
}

// opContext bounds one operation.
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// errorf names the operation that failed without any value it carried.
func errorf(op string, err error) error { return fmt.Errorf("redis %s: %w", op, err) }
