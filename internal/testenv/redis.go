package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server from Debian's packages (.ci/run installs it) on a
// free loopback port, without persistence, its files in Dir: redis.conf
// (Conf) and redis.log.
type Redis struct {
	Addr string
	Port int
	Dir  string
	Conf string
	tls  bool // answers TLS only: up is when it accepts
	bin  string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartRedis starts a redis-server for one test; extra are more config
// directives ("requirepass secret", …). It stops with the test.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: apt-get install redis-server (.ci/run does)")
	}
	r, err := NewRedis(t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err)
	}
	r.bin, r.t = bin, t
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// NewRedis is StartRedis for programs, which run their processes
// themselves: it only writes the config into dir. The caller runs
// `redis-server r.Conf` and then r.Wait.
func NewRedis(dir string, extra ...string) (*Redis, error) {
	port, err := PickPort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, Conf: filepath.Join(dir, "redis.conf")}
	// "{port}" in extra is the chosen port ("port 0", "tls-port {port}" for TLS only).
	more := strings.ReplaceAll(strings.Join(extra, "\n"), "{port}", strconv.Itoa(port))
	r.tls = strings.Contains(more, "tls-port")
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir %s\nlogfile %s\n%s\n",
		port, dir, filepath.Join(dir, "redis.log"), more)
	if err := os.WriteFile(r.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return r, nil
}

// Start (re)starts a StartRedis server on its port, empty, and waits until
// it answers.
func (r *Redis) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, r.Conf)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	if err := r.Wait(context.Background(), 10*time.Second); err != nil {
		r.t.Fatal(err)
	}
}

// Wait sends PING until the server answers, up to timeout; a server with
// requirepass answers NOAUTH, which also says it is up. Of the options,
// Alive applies.
func (r *Redis) Wait(ctx context.Context, timeout time.Duration, opts ...WaitOption) error {
	var o waitOptions
	for _, opt := range opts {
		opt(&o)
	}
	err := poll(ctx, timeout, 20*time.Millisecond, o.alive, func(context.Context) error {
		c, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if r.tls {
			return nil
		}
		return ping(c)
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
		return fmt.Errorf("redis-server on %s never answered: %w\n%s", r.Addr, err, log)
	}
	return nil
}

func ping(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return errors.New("PING: " + strings.TrimSpace(line))
	}
	return nil
}

// Kill stops a StartRedis server at once (SIGKILL: what a crash looks like).
func (r *Redis) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// StartProcess runs a command for the test's duration.
func StartProcess(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}
