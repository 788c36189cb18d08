import { defineConfig } from 'vitest/config';
import { sdk3Aliases } from './test/sdk3/aliases.js';

export default defineConfig({
  // Empty unless KOA_IDEMPOTENCY_OTEL_SDK=3: then the OpenTelemetry packages are SDK 3's (test/sdk3).
  resolve: { alias: sdk3Aliases() },
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
