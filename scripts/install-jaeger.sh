#!/usr/bin/env bash
# Builds the Jaeger v2 binary (all-in-one: OTLP receiver, in-memory storage, query API) from Go module
# github.com/jaegertracing/jaeger@v1.76.0, which is the release v1.76.0 / v2.13.0: the version that
# examples/compose/docker-compose.yml pins as the image jaegertracing/jaeger:2.13.0. The Jaeger end-to-end test
# (test/jaeger-e2e.test.ts) runs it, and skips, saying so, without it.
#
# Safe to run repeatedly: the binary is cached outside the repository and reused once built. The first build
# takes minutes (it pulls the OpenTelemetry Collector and many storage clients); needs Go and its module proxy.
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
if [ -x "$BINARY" ] && "$BINARY" version 2>/dev/null | grep -q "\"gitVersion\":\"${RELEASE_VERSION}\""; then
  report
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: cannot build Jaeger ${RELEASE_VERSION}" >&2
  exit 1
fi

# `go install …@version` refuses modules with replace directives, which Jaeger's has: build it as a tool
# dependency of a scratch module instead.
BUILD_DIR="$CACHE_DIR/build"
mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"
if [ ! -f go.mod ]; then
  go mod init jaegerbuild >/dev/null 2>&1
fi
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${MODULE_VERSION}"

VERSION_PKG='github.com/jaegertracing/jaeger/internal/version'
LDFLAGS="-X ${VERSION_PKG}.latestVersion=${RELEASE_VERSION} -X ${VERSION_PKG}.commitSHA=module-${MODULE_VERSION} -X ${VERSION_PKG}.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Built beside the target and renamed, so an interrupted build never leaves a half-written binary in place.
# (No -trimpath: it would change every package's build ID and miss a warm Go build cache.)
go build -ldflags "$LDFLAGS" -o "$BINARY.partial" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BINARY.partial" "$BINARY"
report
