#!/usr/bin/env bash
# Installs Debian's `pgbouncer` package when the binary is missing: test/system/pgbouncer.test.ts runs the store
# behind a real PgBouncer in transaction pooling, and calls this script itself when the binary is missing.
exec bash "$(dirname "$0")/install-debian-package.sh" pgbouncer pgbouncer
