# llamaboot — see README.md.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit is stamped here too: GOFLAGS=-buildvcs=false (or a build
# outside the checkout) leaves Go's own VCS stamp out.
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git status --porcelain 2>/dev/null | grep -q . && echo +dirty)
BINDIR  ?= bin
LDFLAGS := -s -w -X github.com/llamaboot/llamaboot/internal/buildinfo.Version=$(VERSION) \
	-X github.com/llamaboot/llamaboot/internal/buildinfo.CommitStamp=$(COMMIT)
export CGO_ENABLED = 0

.PHONY: all build test test-deps bench bench-image bench-watch bench-router bench-storm demo lint clean

all: build

# Static binaries: llamaboot and the stand-in llama-server used by tests and the demo.
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINDIR)/llamaboot ./cmd/llamaboot
	$(GO) build -trimpath -o $(BINDIR)/standin-llama-server ./cmd/standin-llama-server

# The whole suite, as CI runs it, and the supervisor and entry again under
# the race detector. Beyond Go and Docker it needs root (the PID-namespace
# and disk-full tests), unshare (util-linux) and gcc (for -race), which
# test-deps installs with apt-get when they are missing. The Docker tests build
# their images from Go binaries only and remove them when they end.
test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	CGO_ENABLED=1 $(GO) test -count=1 -race ./internal/supervise/ ./internal/entry/ ./internal/control/ ./internal/logstream/

test-deps:
	@command -v gcc >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing gcc (the race detector needs cgo) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	  else \
	    echo "make test: gcc is missing (the race detector needs cgo); install it (as root: apt-get install gcc)" >&2; exit 1; \
	  fi; }
	@command -v unshare >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing util-linux (unshare) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux; \
	  else \
	    echo "make test: unshare (util-linux) is missing; install it (as root: apt-get install util-linux)" >&2; exit 1; \
	  fi; }

# Install speed and memory against GNU tar (see README "Performance").
bench:
	$(GO) run ./bench/installbench -size 600

# Installing from an image against docker pull+create+cp (loopback registry)
# and against tar -xf of a docker save's layers; needs a Docker engine.
bench-image:
	$(GO) run ./bench/imagebench -size 600

# What supervision costs: CPU and RSS of llamaboot entry with 8 servers under the watchdog.
bench-watch:
	$(GO) run ./bench/watchbench -instances 8 -duration 60s -interval 1s

# What the router costs against direct requests to a fast upstream on loopback.
bench-router:
	$(GO) run ./bench/routerbench -rounds 15 -requests 1000 -clients 32 -duration 1s

# The control storm: 4 clients, 12 instances, 5 minutes (make test runs it
# for 15 s against 6).
bench-storm:
	LLAMABOOT_STORM=5m LLAMABOOT_STORM_INSTANCES=12 $(GO) test -count=1 -timeout 20m -run TestControlStorm -v ./cmd/llamaboot/

demo: build
	$(GO) run ./examples/demo

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf bin
