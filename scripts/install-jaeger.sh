#!/usr/bin/env bash
# Builds the Jaeger v2 binary (all-in-one: OTLP receiver, in-memory storage, query API) from Go module
# github.com/jaegertracing/jaeger@v1.76.0, which is the release v1.76.0 / v2.13.0: the version that
# examples/compose/docker-compose.yml pins as the image jaegertracing/jaeger:2.13.0. The Jaeger end-to-end test
# (test/system/jaeger-e2e.test.ts) runs it, and calls this script itself when the binary is missing.
#
# Safe to run repeatedly and in parallel: the binary is cached outside the repository and reused once built, and a
# second caller waits for a build under way. The first build takes minutes (it pulls the OpenTelemetry Collector and
# many storage clients); needs Go and its module proxy.
# A source build serves OTLP and the query API, not the UI's assets (the test needs only the API).
set -euo pipefail

MODULE_VERSION='v1.76.0'
RELEASE_VERSION='v2.13.0'
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/koa-idempotency/jaeger-${MODULE_VERSION}"
BINARY="$CACHE_DIR/jaeger"

report() {
  echo "jaeger ${RELEASE_VERSION} (module github.com/jaegertracing/jaeger@${MODULE_VERSION}) at ${BINARY}: $("$BINARY" version 2>/dev/null | tail -n 1)"
}

# The version is stamped at build time (below), so a binary that reports it was built by this script.
built() { [ -x "$BINARY" ] && "$BINARY" version 2>/dev/null | grep -q "\"gitVersion\":\"${RELEASE_VERSION}\""; }

if built; then
  report
  exit 0
fi

# The official tarball's place, which a non-login shell's PATH may lack.
PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: cannot build Jaeger ${RELEASE_VERSION}" >&2
  exit 1
fi

# One build at a time: two test files that need Jaeger start together; the second waits here for the first build,
# then finds its binary.
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/install.lock"
  if ! flock -n 9; then
    echo "jaeger: another process is building Jaeger ${RELEASE_VERSION}; waiting for it to finish"
    flock 9
  fi
  if built; then
    report
    exit 0
  fi
fi

# Minutes without output read as a hang: say every 30 s what is under way and for how long.
heartbeat() {
  # sleep gets no stdout and no lock: left behind by the kill below, it must hold neither the caller's pipe nor the lock.
  while sleep 30 </dev/null >/dev/null 2>&1 9>&-; do echo "jaeger: still $1 ($((SECONDS - STARTED_S)) s since the build started)"; done
}
HEARTBEAT_PID=''
stop_heartbeat() { if [ -n "$HEARTBEAT_PID" ]; then kill "$HEARTBEAT_PID" 2>/dev/null || true; HEARTBEAT_PID=''; fi; }
trap stop_heartbeat EXIT
STARTED_S=$SECONDS
echo "jaeger: building Jaeger ${RELEASE_VERSION} from source, once per machine (cached in ${CACHE_DIR});" \
  "with cold Go caches this takes 5 to 15 minutes on 2 cores (15 when the machine is busy), seconds once cached"

# `go install …@version` refuses modules with replace directives, which Jaeger's has: build it as a tool
# dependency of a scratch module instead.
BUILD_DIR="$CACHE_DIR/build"
mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"
if [ ! -f go.mod ]; then
  go mod init jaegerbuild >/dev/null 2>&1
fi
echo "jaeger: step 1 of 2: downloading its Go modules (about 350; 1 to 2 minutes when none is cached)"
heartbeat 'downloading Go modules' 9>&- &
HEARTBEAT_PID=$!
# Hundreds of "go: downloading" lines would bury the test output: they go to a log, shown only on failure.
if ! go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${MODULE_VERSION}" >"$BUILD_DIR/go-get.log" 2>&1; then
  tail -n 40 "$BUILD_DIR/go-get.log" >&2
  exit 1
fi
stop_heartbeat
echo "jaeger: step 2 of 2: compiling (4 to 13 minutes with a cold Go build cache, under a minute with a warm one)"
heartbeat 'compiling' 9>&- &
HEARTBEAT_PID=$!

VERSION_PKG='github.com/jaegertracing/jaeger/internal/version'
LDFLAGS="-X ${VERSION_PKG}.latestVersion=${RELEASE_VERSION} -X ${VERSION_PKG}.commitSHA=module-${MODULE_VERSION} -X ${VERSION_PKG}.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Built beside the target and renamed, so an interrupted build never leaves a half-written binary in place.
# (No -trimpath: it would change every package's build ID and miss a warm Go build cache.)
go build -ldflags "$LDFLAGS" -o "$BINARY.partial" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BINARY.partial" "$BINARY"
stop_heartbeat
echo "jaeger: built in $((SECONDS - STARTED_S)) s"
report
