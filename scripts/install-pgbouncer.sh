#!/usr/bin/env bash
# Installs Debian's `pgbouncer` package when the binary is missing: test/pgbouncer.test.ts runs the store
# behind a real PgBouncer in transaction pooling, and skips, saying so, without it.
# Safe to run repeatedly; needs root (or sudo) and the Debian package archive.
set -euo pipefail

# Debian installs the binary in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"

if command -v pgbouncer >/dev/null 2>&1; then
  echo "pgbouncer already installed: $(pgbouncer --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=''
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo'; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null

# The package starts a system service where an init system runs; the test starts its own pgbouncer on a
# free loopback port with a temporary configuration, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
  $SUDO systemctl stop pgbouncer || true
fi

echo "installed: $(pgbouncer --version 2>&1 | head -n 1)"
