# extauth — external auth for nginx auth_request and the gateways after it.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell go env GOPATH 2>/dev/null)/bin

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# An execution count, not a duration: a duration-bounded run can fail with a
# spurious "context deadline exceeded" on a loaded machine (go.dev/issue/75804).
FUZZTIME ?= 30000x
CONFIG ?= examples/config.yaml

# Linters, pinned: `make tools` installs them (.ci/run does) into $(GOBIN).
STATICCHECK_VERSION ?= v0.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
GOBIN ?= $(shell go env GOPATH 2>/dev/null)/bin

.PHONY: all build docker test unit fuzz e2e chart-test manifests lint tools run bench bench-test bench-load demo demo-deps clean

all: build

## build: the static binary, built as the Dockerfile builds it
build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/extauth ./cmd/extauth

## docker: the image, where a Docker engine runs (the chart tests check the binary it builds)
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t extauth:$(VERSION) .

## test: vet, every test under the race detector, each fuzz target for $(FUZZTIME), then
## the end-to-end tests (nginx, a real OpenID provider, chromium: .ci/run installs them)
test: lint unit fuzz chart-test e2e bench-test

unit:
	go test -race -count=1 ./...
	@echo "== session cookie sizes of real providers' token sets"
	@go test -count=1 -run 'TestTokenSetSizes' -v ./pkg/session | grep -E 'tokens .* cookie'

fuzz:
	go test -run '^$$' -fuzz '^FuzzCookie$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./pkg/session
	go test -run '^$$' -fuzz '^FuzzStateDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./pkg/session
	go test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./pkg/redirect
	go test -run '^$$' -fuzz '^FuzzSkip$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./pkg/policy

## e2e: the browser tests against the real stack (e2e/ is its own Go module)
e2e:
	cd e2e && go vet ./... && go test -count=1 -timeout 15m ./...

## chart-test: render, lint and check the Helm chart, its schema and manifests/
## (charts/test is its own Go module)
chart-test:
	cd charts/test && go vet ./... && go test -count=1 ./...

## manifests: regenerate manifests/extauth.yaml from the Helm chart
manifests:
	cd charts/test && go run ./cmd/render

## lint: gofmt, go vet and staticcheck on every module, golangci-lint's errorlint and
## bodyclose on the service's module (.golangci.yml); installs the linters when missing
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@command -v staticcheck >/dev/null && command -v golangci-lint >/dev/null || $(MAKE) tools
	go vet ./...
	staticcheck ./...
	golangci-lint run ./...
	for m in e2e charts/test bench; do (cd $$m && go vet ./... && staticcheck ./...) || exit 1; done

## tools: the pinned linters, with go install
tools:
	GOBIN=$(GOBIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(GOBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

## run: serve with $(CONFIG)
run: build
	./bin/extauth serve --config $(CONFIG)

## bench: the check's Go benchmarks (target: ≤ 20 µs/op and ≤ 40 allocs/op)
bench:
	go test -run '^$$' -bench . -benchmem -count 3 ./pkg/handlers ./pkg/session ./pkg/assertion

## bench-test: the load benchmark's own tests (every case for a second, the refresh
## storm of 200 sessions × 20 checks); bench/ is its own Go module
bench-test:
	cd bench && go test -count=1 -timeout 10m ./...

## bench-load: nginx auth_request under wrk on loopback (floors, extauth, oauth2-proxy, the redis
## store) and a refresh storm; writes bench/RESULTS.md. Flags: BENCH_FLAGS="-duration 2s" (bench/README.md)
bench-load:
	cd bench && go run . $(BENCH_FLAGS)

## demo: the whole flow on loopback: nginx, a real OpenID provider, extauth, an echo app
demo: demo-deps
	cd e2e && go run ./cmd/demo

# demo-deps installs nginx with set_escape_uri when it is missing (Debian; root or sudo).
demo-deps:
	@if [ ! -e /usr/lib/nginx/modules/ngx_http_set_misc_module.so ]; then \
		echo "installing nginx and its set-misc module (Debian packages)…"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-http-ndk libnginx-mod-http-set-misc; \
	fi

clean:
	rm -rf bin
