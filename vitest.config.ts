import { defineConfig } from 'vitest/config';
import { sdk2Aliases } from './test/sdk2/aliases.js';

export default defineConfig({
  // Empty unless KOA_IDEMPOTENCY_OTEL_SDK=2: then the OpenTelemetry packages are SDK 2's (test/sdk2).
  resolve: { alias: sdk2Aliases() },
  test: {
    include: ['test/**/*.test.ts'],
    // A real Postgres server for the whole run (DATABASE_URL, or an embedded one started here).
    globalSetup: ['test/global-setup.ts'],
    // Files run in parallel (each owns a schema); child processes and real Postgres need real time.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
