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

	"github.com/extauth/extauth/internal/testenv"
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
// persistence, its files in dir (testenv's config, as the tests run it); it
// answers PING before this returns.
func startRedis(ctx context.Context, ps *procs, bin, dir string) (*proc, string, error) {
	r, err := testenv.NewRedis(dir)
	if err != nil {
		return nil, "", err
	}
	p, err := ps.start("redis-server", filepath.Join(dir, "redis.out"), syscall.SIGTERM, bin, r.Conf)
	if err != nil {
		return nil, "", err
	}
	if err := r.Wait(ctx, 10*time.Second, testenv.Alive(p.alive)); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, r.Addr, nil
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
