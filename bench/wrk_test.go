package main

import (
	"testing"
	"time"
)

const wrkSample = `Running 10s test @ http://127.0.0.1:40123/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.01ms    1.92ms  41.21ms   86.12%
    Req/Sec    11.08k     1.01k   13.54k    70.50%
  Latency Distribution
     50%    2.61ms
     75%    3.48ms
     90%    4.83ms
     99%   10.12ms
  220613 requests in 10.01s, 32.82MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  22040.28
Transfer/sec:      3.28MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 220613 || r.RPS != 22040.28 || r.Seconds != 10.01 {
		t.Errorf("requests %d, rps %v, seconds %v", r.Requests, r.RPS, r.Seconds)
	}
	if r.P50 != 2610*time.Microsecond || r.P99 != 10120*time.Microsecond {
		t.Errorf("p50 %v p99 %v", r.P50, r.P99)
	}
	if r.Non2xx3xx != 3 || r.SocketErrors != 3 {
		t.Errorf("non-2xx %d socket errors %d", r.Non2xx3xx, r.SocketErrors)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Error("parsed a failed run")
	}
	for in, want := range map[[2]string]time.Duration{
		{"842.00", "us"}: 842 * time.Microsecond, {"1.50", "s"}: 1500 * time.Millisecond, {"2.00", "m"}: 2 * time.Minute,
	} {
		if got, _ := wrkDuration(in[0], in[1]); got != want {
			t.Errorf("%v: %v, want %v", in, got, want)
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	// comm with a space and a parenthesis; utime 1234, stime 56.
	stat := "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 8 0 100 0 0"
	got, err := parseStatTicks(stat)
	if err != nil || got != 1290 {
		t.Fatalf("got %d, %v; want 1290", got, err)
	}
}
