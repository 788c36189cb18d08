#!/usr/bin/env bash
# Usage: install-debian-package.sh BINARY PACKAGE
# Installs Debian's PACKAGE when BINARY is missing, for a test that runs the real program (and skips, saying so,
# without it). Safe to run repeatedly; needs root (or sudo) and the Debian package archive.
set -euo pipefail
binary="$1"
package="$2"

# Debian installs some binaries in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"

if command -v "$binary" >/dev/null 2>&1; then
  echo "$binary already installed: $("$binary" --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=''
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo'; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null

# The package starts a system service where an init system runs; the tests start their own process on a free
# loopback port with a temporary configuration, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$package" 2>/dev/null; then
  $SUDO systemctl stop "$package" || true
fi

echo "installed: $("$binary" --version 2>&1 | head -n 1)"
