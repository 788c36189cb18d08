#!/usr/bin/env bash
# Usage: install-debian-package.sh BINARY PACKAGE
# Installs Debian's PACKAGE when BINARY is missing, for a test that runs the real program (the test file runs this
# itself, through test/helpers/system-tools.ts, and skips, saying so, only where the machine cannot install it).
# Safe to run repeatedly and in parallel; needs apt-get and root (or passwordless sudo).
set -euo pipefail
binary="$1"
package="$2"

# Debian installs some binaries in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"

installed() { command -v "$binary" >/dev/null 2>&1; }

if installed; then
  echo "$binary already installed: $("$binary" --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=''
# -n: never prompt; the tests run without a terminal, and a prompt would hang them.
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo -n'; fi

# Two test files may install at once (Prometheus and PgBouncer): one apt-get at a time, the second waits here
# and then finds its package installed or installs it. dpkg's own lock is waited for too (another user's apt-get).
LOCK_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/koa-idempotency"
mkdir -p "$LOCK_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$LOCK_DIR/apt.lock"
  if ! flock -n 9; then
    echo "$package: waiting for another install of this project's Debian packages to finish"
    flock 9
  fi
  if installed; then
    echo "$binary installed meanwhile: $("$binary" --version 2>&1 | head -n 1)"
    exit 0
  fi
fi

echo "$package: installing Debian's package (apt-get update and install, usually under a minute)"
export DEBIAN_FRONTEND=noninteractive
APT_WAIT=(-o DPkg::Lock::Timeout=600)
$SUDO apt-get "${APT_WAIT[@]}" update -qq
$SUDO apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "$package" >/dev/null

# The package starts a system service where an init system runs; the tests start their own process on a free
# loopback port with a temporary configuration, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$package" 2>/dev/null; then
  $SUDO systemctl stop "$package" || true
fi

echo "installed: $("$binary" --version 2>&1 | head -n 1)"
