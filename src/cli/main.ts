#!/usr/bin/env node
/**
 * `koa-idempotency`: the operator CLI (migrate, sweep, inspect, stats) over DATABASE_URL.
 * The exit code is set rather than forced, so stdout is flushed before the process ends.
 */
import { runCli } from './run.js';

process.exitCode = await runCli(process.argv.slice(2), process.env, {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
