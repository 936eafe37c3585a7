package testenv

import (
	"bufio"
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

// Redis is a redis-server from Debian's packages (.ci/run installs it),
// started for one test on a free loopback port, without persistence.
type Redis struct {
	Addr string
	Port int
	Dir  string
	args []string
	tls  bool // answers TLS only: up is when it accepts
	cmd  *exec.Cmd
	t    testing.TB
}

// StartRedis starts a redis-server; extra are more config directives
// ("requirepass secret", …). It stops with the test.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: apt-get install redis-server (.ci/run does)")
	}
	port := FreePort(t)
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: t.TempDir(), t: t}
	r.args = []string{bin}
	// "{port}" in extra is the chosen port ("port 0", "tls-port {port}" for TLS only).
	more := strings.ReplaceAll(strings.Join(extra, "\n"), "{port}", strconv.Itoa(port))
	r.tls = strings.Contains(more, "tls-port")
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir %s\nlogfile %s\n%s\n",
		port, r.Dir, filepath.Join(r.Dir, "redis.log"), more)
	if err := os.WriteFile(filepath.Join(r.Dir, "redis.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start (re)starts the server on its port, empty, and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.args[0], filepath.Join(r.Dir, "redis.conf"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err == nil {
			ok := r.tls || ping(c)
			c.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
			r.t.Fatalf("redis-server never answered on %s: %v\n%s", r.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING inline; a server with requirepass answers NOAUTH, which
// also says it is up.
func ping(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Kill stops the server at once (SIGKILL: what a crash looks like).
func (r *Redis) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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
