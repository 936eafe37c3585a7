package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// caseResult is a measured row.
type caseResult struct {
	caseDef
	w        *wrkResult
	authCPU  float64 // auth process CPU seconds per 10k requests; <0: none
	nginxCPU float64 // nginx's, <0: not in the path
	rss      int64   // auth process VmHWM
	// redisPerCheck is case 8's Redis commands per request; 0 elsewhere.
	redisPerCheck float64
	notes         []string
	profileTop    string
}

// runCases measures every selected case, -rounds times, the rounds
// interleaved (case 1, 2, …, then again) so that a noisy moment of the
// machine spreads over all cases instead of hitting one. Each case reports
// its median round by requests/s, with the median CPU per 10k of its
// rounds and the highest peak RSS. A case that fails ends the run, except
// oauth2-proxy's, which only become "unavailable".
func (b *bench) runCases(ctx context.Context) ([]*caseResult, error) {
	logf("cases: %s, nginx worker_processes %d, same for every case, %d rounds", b.o.wrk, b.o.nginxWorkers, b.o.rounds)
	cases, err := b.selectCases()
	if err != nil {
		return nil, err
	}
	rounds := make([][]*caseResult, len(cases))
	for round := range max(b.o.rounds, 1) {
		for i, c := range cases {
			if c.unavailable != "" {
				continue
			}
			r, err := b.measure(ctx, c)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if err != nil {
				if strings.HasPrefix(c.key, "oauth2-proxy") {
					// oauth2-proxy never fails the whole run.
					cases[i].unavailable = oneLine(err.Error())
					logf("%s: unavailable: %v", c.name, err)
					continue
				}
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			logf("round %d, %s: %.0f req/s, p50 %s, p99 %s %s", round+1, c.name, r.w.RPS, fmtDur(r.w.P50), fmtDur(r.w.P99), strings.Join(r.notes, "; "))
			rounds[i] = append(rounds[i], r)
		}
	}
	var results []*caseResult
	for i, c := range cases {
		if c.unavailable != "" || len(rounds[i]) == 0 {
			logf("%s: unavailable: %s", c.name, c.unavailable)
			results = append(results, &caseResult{caseDef: c})
			continue
		}
		results = append(results, medianRound(rounds[i]))
	}
	return results, nil
}

// medianRound is the round with the median requests/s, carrying the median
// CPU figures and the highest peak RSS of all rounds.
func medianRound(rs []*caseResult) *caseResult {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b *caseResult) int { return cmp.Compare(a.w.RPS, b.w.RPS) })
	med := *sorted[len(sorted)/2]
	median := func(f func(*caseResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	med.authCPU = median(func(r *caseResult) float64 { return r.authCPU })
	med.nginxCPU = median(func(r *caseResult) float64 { return r.nginxCPU })
	for _, r := range rs {
		med.rss = max(med.rss, r.rss)
		if r.profileTop != "" {
			med.profileTop = r.profileTop
		}
	}
	return &med
}

// measure runs one case: fresh processes (so that peak RSS is this case's),
// a check of the expected status, a warm-up, the measured run between two
// readings of /proc, and a second check of the status.
func (b *bench) measure(ctx context.Context, c caseDef) (*caseResult, error) {
	r := &caseResult{caseDef: c, authCPU: -1, nginxCPU: -1}
	var svc *service
	var err error
	if c.service != nil {
		if svc, err = c.service(ctx); err != nil {
			return nil, err
		}
		defer svc.stop()
	}
	var ngx *nginxInstance
	url := ""
	if c.viaNginx {
		authAddr := ""
		if svc != nil {
			authAddr = svc.addr
		}
		if ngx, err = b.nginx.start(ctx, b.ps, filepath.Join(b.dir, "nginx-"+c.key), authAddr, svc == nil); err != nil {
			return nil, err
		}
		defer ngx.proc.stop()
		url = ngx.URL
	} else {
		url = "http://" + svc.addr + c.path
	}
	headers := []string{"X-Original-URL: http://app.example/", "X-Original-Method: GET"}
	if c.viaNginx {
		headers = nil // nginx sets them for the auth subrequest
	}
	if ck := c.cookie(); ck != "" {
		headers = append(headers, "Cookie: "+ck)
	}

	if err := expectStatus(ctx, url, headers, c.want); err != nil {
		return nil, fmt.Errorf("before the run: %w", err)
	}
	if b.o.wrk.Warmup > 0 {
		if _, err := runWrk(ctx, b.o.wrk, b.o.wrk.Warmup, url, headers); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}

	before, err := b.readCounters(svc, ngx)
	if err != nil {
		return nil, err
	}
	if r.w, err = runWrk(ctx, b.o.wrk, b.o.wrk.Duration, url, headers); err != nil {
		return nil, err
	}
	after, err := b.readCounters(svc, ngx)
	if err != nil {
		return nil, err
	}
	per10k := func(ticks int64) float64 {
		return float64(ticks) / clockTicks / float64(max(r.w.Requests, 1)) * 10000
	}
	if svc != nil {
		r.authCPU = per10k(after.auth - before.auth)
		if r.rss, err = peakRSS(svc.proc.pid()); err != nil {
			return nil, err
		}
	}
	if ngx != nil {
		r.nginxCPU = per10k(after.nginx - before.nginx)
	}
	if svc != nil && svc.side != nil {
		r.notes = append(r.notes, fmt.Sprintf("%s CPU s / 10k: %.3f", svc.side.name, per10k(after.side-before.side)))
	}
	if svc != nil && svc.redisAddr != "" {
		// Less the INFO of the second reading.
		n := after.redisCommands - before.redisCommands - 1
		r.redisPerCheck = float64(n) / float64(max(r.w.Requests, 1))
		r.notes = append(r.notes, fmt.Sprintf("Redis commands per check: %.2f", r.redisPerCheck))
	}
	if s := r.w.errorSummary(); s != "" {
		r.notes = append(r.notes, s)
	}
	// extauth counts its own answers: they must match what wrk saw (give or
	// take the requests in flight when wrk stopped).
	if svc != nil && svc.metrics != "" {
		result := "authenticated"
		if c.want != 200 {
			result = "unauthenticated"
		}
		n := after.checks[result] - before.checks[result]
		if d := n - float64(r.w.Requests); d < 0 || d > float64(2*b.o.wrk.Connections) {
			r.notes = append(r.notes, fmt.Sprintf("extauth counted %.0f %s checks for %d requests", n, result, r.w.Requests))
		}
	}
	if err := expectStatus(ctx, url, headers, c.want); err != nil {
		return nil, fmt.Errorf("after the run: %w", err)
	}
	if b.o.profile != "" && c.key == "extauth" && !b.profiled {
		b.profiled = true
		if r.profileTop, err = b.profileExtauth(ctx, svc, url, headers); err != nil {
			r.notes = append(r.notes, "profile: "+oneLine(err.Error()))
		}
	}
	return r, nil
}

type counters struct {
	auth, nginx, side int64
	redisCommands     int64              // total_commands_processed of the case's redis-server
	checks            map[string]float64 // extauth_auth_requests_total{endpoint="auth"} by result
}

func (b *bench) readCounters(svc *service, ngx *nginxInstance) (counters, error) {
	var c counters
	var err error
	if svc != nil {
		if c.auth, err = cpuTicks(svc.proc.pid()); err != nil {
			return c, err
		}
		if svc.side != nil {
			if c.side, err = cpuTicks(svc.side.pid()); err != nil {
				return c, err
			}
		}
		if svc.redisAddr != "" {
			if c.redisCommands, err = redisCommands(svc.redisAddr); err != nil {
				return c, err
			}
		}
		if svc.metrics != "" {
			if c.checks, err = scrapeMetric(context.Background(), "http://"+svc.metrics+"/metrics", "extauth_auth_requests_total", "result", `endpoint="auth"`, `app=""`); err != nil {
				return c, err
			}
		}
	}
	if ngx != nil {
		if c.nginx, err = groupTicks(ngx.proc.pid()); err != nil {
			return c, err
		}
	}
	return c, nil
}

// profileExtauth takes a 10 s CPU profile while wrk loads extauth again.
func (b *bench) profileExtauth(ctx context.Context, svc *service, url string, headers []string) (string, error) {
	logf("profiling extauth for 10 s under the same load")
	type wrkDone struct{ err error }
	done := make(chan wrkDone, 1)
	go func() {
		_, err := runWrk(ctx, b.o.wrk, 12*time.Second, url, headers)
		done <- wrkDone{err}
	}()
	time.Sleep(time.Second)
	client := &http.Client{Timeout: 30 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svc.metrics+"/debug/pprof/profile?seconds=10", nil)
	resp, err := client.Do(req)
	if err != nil {
		<-done
		return "", err
	}
	defer resp.Body.Close()
	f, err := os.Create(b.o.profile)
	if err != nil {
		<-done
		return "", err
	}
	_, err = io.Copy(f, resp.Body)
	f.Close()
	if d := <-done; d.err != nil {
		return "", d.err
	}
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", b.extauth, b.o.profile).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	return string(out), nil
}

// expectStatus makes one request and checks its status.
func expectStatus(ctx context.Context, url string, headers []string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: noRedirect, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, want)
	}
	return nil
}

// scrapeMetric sums, per value of label, the samples of metric name in a
// Prometheus text exposition whose labels include every pair in match
// (`endpoint="auth"`, ...). Labels are matched wherever they stand, so a label
// added to the metric later (the app label did this once) does not hide it.
func scrapeMetric(ctx context.Context, url, name, label string, match ...string) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		labels, value := "", ""
		switch rest := line[len(name):]; {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, value = rest[1:end], strings.TrimSpace(rest[end+1:])
		case strings.HasPrefix(rest, " "):
			value = strings.TrimSpace(rest)
		default:
			continue // another metric whose name starts with name
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		pairs := map[string]string{}
		for _, p := range strings.Split(labels, ",") {
			if k, val, ok := strings.Cut(p, "="); ok {
				pairs[k+"="+val] = strings.Trim(val, `"`)
				pairs[k] = strings.Trim(val, `"`)
			}
		}
		matched := true
		for _, m := range match {
			if _, ok := pairs[m]; !ok {
				matched = false
			}
		}
		if matched {
			out[pairs[label]] += v
		}
	}
	return out, sc.Err()
}
