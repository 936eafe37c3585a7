package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkParams are the same for every case.
type wrkParams struct {
	Threads, Connections int
	Duration, Warmup     time.Duration
}

func (p wrkParams) String() string {
	warm := "no warm-up"
	if p.Warmup > 0 {
		warm = fmt.Sprintf("after a %s warm-up", p.Warmup)
	}
	return fmt.Sprintf("wrk -t%d -c%d -d%s --latency (%s)", p.Threads, p.Connections, p.Duration, warm)
}

// wrkResult is what we read from wrk's --latency output.
type wrkResult struct {
	Requests     int64
	Seconds      float64 // the run's own duration, as wrk reports it
	RPS          float64
	P50, P99     time.Duration
	Non2xx3xx    int64
	SocketErrors int64
	Raw          string
}

// runWrk runs wrk for d against url with headers, bounded by d + 30 s.
func runWrk(ctx context.Context, p wrkParams, d time.Duration, url string, headers []string) (*wrkResult, error) {
	args := []string{
		"-t", strconv.Itoa(p.Threads), "-c", strconv.Itoa(p.Connections),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second)/time.Second))),
		"--timeout", "5s", "--latency",
	}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("wrk: %w", ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(string(out))
}

var (
	reRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),`)
	reRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	rePct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	reNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	reSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk 4's report (with --latency).
func parseWrk(out string) (*wrkResult, error) {
	r := &wrkResult{Raw: out}
	m := reRequests.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("wrk output without a request count:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, err := wrkDuration(m[2], m[3])
	if err != nil {
		return nil, err
	}
	r.Seconds = d.Seconds()
	m = reRPS.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("wrk output without Requests/sec:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	pcts := rePct.FindAllStringSubmatch(out, -1)
	for _, m := range pcts {
		d, err := wrkDuration(m[2], m[3])
		if err != nil {
			return nil, err
		}
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return nil, fmt.Errorf("wrk output without the 50%% and 99%% latencies (--latency):\n%s", out)
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx3xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	return r, nil
}

// wrkDuration converts wrk's "12.34ms" style numbers.
func wrkDuration(num, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[unit]
	return time.Duration(v * mult), nil
}

// errorSummary is a short note on failed requests, empty when none.
func (r *wrkResult) errorSummary() string {
	var parts []string
	if r.Non2xx3xx > 0 {
		parts = append(parts, fmt.Sprintf("%d non-2xx/3xx", r.Non2xx3xx))
	}
	if r.SocketErrors > 0 {
		sc := bufio.NewScanner(strings.NewReader(r.Raw))
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Socket errors") {
				parts = append(parts, strings.TrimSpace(sc.Text()))
			}
		}
	}
	return strings.Join(parts, "; ")
}
