#!/usr/bin/env bash
# Installs Debian's `prometheus` package when the binary is missing: the dashboard e2e test
# (test/dashboards-e2e.test.ts) runs the real server, and skips, saying so, without it.
# Safe to run repeatedly; needs root (or sudo) and the Debian package archive.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=''
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo'; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# The package starts a system service where an init system runs; the test starts its own server on a
# free loopback port with a temporary config and storage, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi

echo "installed: $(prometheus --version 2>&1 | head -n 1)"
