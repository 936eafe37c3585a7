package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// findRedis returns the redis-server binary: bin when given, else the one on
// PATH or Debian's /usr/bin/redis-server.
func findRedis(bin string) (string, error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", err
		}
		return bin, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", errors.New("redis-server not found: apt-get install -y redis-server")
}

// startRedis runs a redis-server on a free loopback port, without
// persistence (save "", appendonly no), its files in dir; it answers PING
// before this returns.
func startRedis(ctx context.Context, ps *procs, bin, dir string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil,
		"port %d\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\ndir %s\nlogfile \"\"\ndaemonize no\n",
		port, dir), 0o600); err != nil {
		return nil, "", err
	}
	p, err := ps.start("redis-server", filepath.Join(dir, "redis.log"), syscall.SIGTERM, bin, conf)
	if err != nil {
		return nil, "", err
	}
	if err := waitRedis(ctx, p, addr, 10*time.Second); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

// waitRedis sends PING until the server answers +PONG.
func waitRedis(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = redisPing(addr); last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("redis-server exited (%v): %s", p.err, p.tail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis-server on %s never answered: %v", addr, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// redisCommand sends one command (inline, no argument with spaces) and
// returns its answer: a status, error or integer line as it is ("+OK",
// ":12"), a bulk string's content.
func redisCommand(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return "", fmt.Errorf("%s: answer %q", cmd, line)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// redisCommands is total_commands_processed from INFO stats: the commands
// the server has run since it started (INFO itself included).
func redisCommands(addr string) (int64, error) {
	info, err := redisCommand(addr, "INFO stats")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "total_commands_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO stats without total_commands_processed")
}
