#!/usr/bin/env bash
# Installs Debian's `prometheus` package when the binary is missing: the dashboard e2e test
# (test/dashboards-e2e.test.ts) runs the real server and calls this script itself when the binary is missing.
exec bash "$(dirname "$0")/install-debian-package.sh" prometheus prometheus
