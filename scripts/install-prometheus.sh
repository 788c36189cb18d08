#!/usr/bin/env bash
# Builds Prometheus 3.16.0 from Go module github.com/prometheus/prometheus@v0.316.0 (Prometheus tags its Go module
# v0.3MM.P for release 3.MM.P): the version that examples/compose/docker-compose.yml pins as prom/prometheus:v3.16.0.
# The dashboard tests (test/dashboards-e2e.test.ts, test/dashboards-forms.test.ts) run it, and call this script
# themselves when the binary is missing.
#
# Safe to run repeatedly and in parallel: the binary is cached outside the repository and reused once built, and a
# second caller waits for a build under way. Needs Go and its module proxy. Built without the web UI's assets (build
# tag builtinassets: they need a Node build of the React app) and without service discovery other than static targets
# (remove_all_sd: the cloud SDKs would triple the build), which is all the tests use: the HTTP API, scraping, the OTLP
# receiver.
set -euo pipefail

MODULE_VERSION='v0.316.0'
RELEASE_VERSION='3.16.0'
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/koa-idempotency/prometheus-${MODULE_VERSION}"
BINARY="$CACHE_DIR/prometheus"

report() {
  echo "prometheus ${RELEASE_VERSION} (module github.com/prometheus/prometheus@${MODULE_VERSION}) at ${BINARY}: $("$BINARY" --version 2>/dev/null | head -n 1)"
}

# The version is stamped at build time (below), so a binary that reports it was built by this script.
built() { [ -x "$BINARY" ] && "$BINARY" --version 2>/dev/null | grep -q "version ${RELEASE_VERSION} "; }

if built; then
  report
  exit 0
fi

# The official tarball's place, which a non-login shell's PATH may lack.
PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: cannot build Prometheus ${RELEASE_VERSION}" >&2
  exit 1
fi

# One build at a time: two test files that need Prometheus start together; the second waits here for the first
# build, then finds its binary.
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/install.lock"
  if ! flock -n 9; then
    echo "prometheus: another process is building Prometheus ${RELEASE_VERSION}; waiting for it to finish"
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
  while sleep 30 </dev/null >/dev/null 2>&1 9>&-; do echo "prometheus: still building ($((SECONDS - STARTED_S)) s since the build started)"; done
}
HEARTBEAT_PID=''
stop_heartbeat() { if [ -n "$HEARTBEAT_PID" ]; then kill "$HEARTBEAT_PID" 2>/dev/null || true; HEARTBEAT_PID=''; fi; }
trap stop_heartbeat EXIT
STARTED_S=$SECONDS
echo "prometheus: building Prometheus ${RELEASE_VERSION} from source, once per machine (cached in ${CACHE_DIR});" \
  "with cold Go caches this takes 4 to 11 minutes on 2 cores (11 when the machine is busy), under a minute with a warm Go build cache"
heartbeat 9>&- &
HEARTBEAT_PID=$!

VERSION_PKG='github.com/prometheus/common/version'
LDFLAGS="-X ${VERSION_PKG}.Version=${RELEASE_VERSION} -X ${VERSION_PKG}.Revision=module-${MODULE_VERSION} -X ${VERSION_PKG}.Branch=module -X ${VERSION_PKG}.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
# Its go.mod has no replace directive, so `go install …@version` builds it without a scratch module. Installed beside
# the target and renamed, so an interrupted build never leaves a half-written binary in place. Hundreds of
# "go: downloading" lines would bury the test output: they go to a log, shown only on failure.
rm -rf "$CACHE_DIR/partial"
if ! GOBIN="$CACHE_DIR/partial" go install -tags netgo,remove_all_sd -ldflags "$LDFLAGS" \
  "github.com/prometheus/prometheus/cmd/prometheus@${MODULE_VERSION}" >"$CACHE_DIR/build.log" 2>&1; then
  tail -n 40 "$CACHE_DIR/build.log" >&2
  exit 1
fi
mv "$CACHE_DIR/partial/prometheus" "$BINARY"
rmdir "$CACHE_DIR/partial"
stop_heartbeat
echo "prometheus: built in $((SECONDS - STARTED_S)) s"
report
