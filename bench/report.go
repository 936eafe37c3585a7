package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type machineInfo struct {
	Date, CPU, Kernel, Go, Nginx, Wrk, OAuth2Proxy string
	NProc                                          int
}

func readMachine(n *nginxSetup) machineInfo {
	m := machineInfo{
		Date:  time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		NProc: runtime.NumCPU(),
		CPU:   "unknown",
		Go:    runtime.Version(),
		Nginx: n.version(),
	}
	if out, err := exec.Command("nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.NProc)
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	}
	out, _ := exec.Command("wrk", "-v").CombinedOutput()
	m.Wrk = strings.TrimSpace(strings.SplitN(string(out), "Copyright", 2)[0])
	m.OAuth2Proxy = "not run"
	return m
}

func (b *bench) report(results []*caseResult, storm *stormResult, stormErr error) string {
	m := b.machine
	var s strings.Builder
	fmt.Fprintf(&s, "# extauth load benchmark (`make bench-load`)\n\n")
	fmt.Fprintf(&s, "- Date: %s\n", m.Date)
	if b.o.note != "" {
		fmt.Fprintf(&s, "- Note: %s\n", b.o.note)
	}
	fmt.Fprintf(&s, "- Machine: nproc %d, %s, Linux %s (load generator, nginx and the auth process share these cores)\n", m.NProc, m.CPU, m.Kernel)
	fmt.Fprintf(&s, "- Go: %s; nginx: %s; wrk: %s; oauth2-proxy: %s\n", m.Go, m.Nginx, m.Wrk, m.OAuth2Proxy)
	fmt.Fprintf(&s, "- Rounds: %d of every case, interleaved; each case shows its median round by requests/s, the median CPU of its rounds and the highest peak RSS\n", max(b.o.rounds, 1))
	fmt.Fprintf(&s, "- Load: `%s`, every case on 127.0.0.1; nginx `worker_processes %d`, the reference `examples/nginx/protected-app.conf` (upstream `keepalive 32`), no access log\n",
		b.o.wrk, b.o.nginxWorkers)
	fmt.Fprintf(&s, "- Sessions: extauth's is Okta-sized (`okta.json`, sealed with the config's secret: %d B of cookie)", cookieHeaderSize(b.cookie))
	if b.redisCookie != "" {
		fmt.Fprintf(&s, "; with the redis store the cookie is a ticket (%d B) to an Okta-sized session from a real sign-in", cookieHeaderSize(b.redisCookie))
	}
	if b.o2pCookie != "" {
		fmt.Fprintf(&s, "; oauth2-proxy's comes from a real sign-in against the fake provider answering with the same Okta tokens (%d B of cookie)", cookieHeaderSize(b.o2pCookie))
	}
	fmt.Fprintf(&s, "\n- CPU: utime+stime from /proc/PID/stat before and after the measured run, per 10,000 requests wrk completed; peak RSS: VmHWM of the auth process, started fresh for each case\n\n")

	fmt.Fprintf(&s, "| case | requests/s | p50 | p99 | auth CPU s / 10k checks | auth peak RSS | nginx CPU s / 10k | notes |\n")
	fmt.Fprintf(&s, "|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range results {
		if r.unavailable != "" {
			fmt.Fprintf(&s, "| %s | unavailable: %s | | | | | | |\n", r.name, strings.ReplaceAll(r.unavailable, "|", `\|`))
			continue
		}
		fmt.Fprintf(&s, "| %s | %.0f | %s | %s | %s | %s | %s | %s |\n", r.name, r.w.RPS, fmtDur(r.w.P50), fmtDur(r.w.P99),
			fmtCPU(r.authCPU), fmtRSS(r.rss, r.authCPU >= 0), fmtCPU(r.nginxCPU), strings.Join(r.notes, "; "))
	}
	fmt.Fprintf(&s, "\n")
	for _, r := range results {
		fmt.Fprintf(&s, "- **%s**: %s\n", r.name, r.what)
	}

	byKey := map[string]*caseResult{}
	for _, r := range results {
		if r.unavailable == "" {
			byKey[r.key] = r
		}
	}
	fmt.Fprintf(&s, "\n## Ratios\n\n")
	fmt.Fprintf(&s, "| ratio | requests/s | p50 | p99 | auth CPU / check | auth peak RSS |\n|---|---:|---:|---:|---:|---:|\n")
	for _, p := range [][3]string{
		{"extauth / floor-go (through nginx)", "extauth", "floor-go"},
		{"extauth / oauth2-proxy (through nginx)", "extauth", "oauth2-proxy"},
		{"extauth / floor-go (direct)", "extauth-direct", "floor-go-direct"},
		{"extauth / oauth2-proxy (direct)", "extauth-direct", "oauth2-proxy-direct"},
		{"extauth redis store / cookie store (through nginx)", "extauth-redis", "extauth"},
	} {
		a, c := byKey[p[1]], byKey[p[2]]
		if a == nil || c == nil {
			fmt.Fprintf(&s, "| %s | n/a | | | | |\n", p[0])
			continue
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s |\n", p[0],
			ratio(a.w.RPS, c.w.RPS), ratio(a.w.P50.Seconds(), c.w.P50.Seconds()), ratio(a.w.P99.Seconds(), c.w.P99.Seconds()),
			ratio(a.authCPU, c.authCPU), ratio(float64(a.rss), float64(c.rss)))
	}

	if r := byKey["extauth"]; r != nil && r.profileTop != "" {
		fmt.Fprintf(&s, "\n## CPU profile of extauth under load (case 3, 10 s, `go tool pprof -top`)\n\n```\n%s```\n", r.profileTop)
	}

	fmt.Fprintf(&s, "\n## Refresh storm\n\n")
	switch {
	case storm == nil && stormErr == nil:
		fmt.Fprintf(&s, "Skipped (-no-storm).\n")
	case stormErr != nil:
		fmt.Fprintf(&s, "**FAIL**: %s\n", stormErr)
	default:
		fmt.Fprintf(&s, "The built extauth (cookie store, a process of its own) on loopback, the benchmark's fake provider "+
			"(`providertest`: refresh-token rotation, reuse detection revoking the token family, 2 s access tokens, "+
			"an unthrottled token endpoint on loopback); %d sign-ins through /oauth2/start → /authorize → /oauth2/callback (%s), one wait for the access tokens to expire, "+
			"then all %d checks at once, straight to /oauth2/auth (no nginx), each on a connection of its own.\n\n", storm.Sessions, fmtDur(storm.SignIns), storm.Checks)
		s.WriteString(storm.markdown())
	}
	return s.String()
}

func ratio(a, b float64) string {
	if a < 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtCPU(v float64) string {
	if v < 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f", v)
}

func fmtRSS(v int64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
