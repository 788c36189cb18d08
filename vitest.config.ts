import { configDefaults, defineConfig } from 'vitest/config';
import { sdk2Aliases } from './test/sdk2/aliases.js';

/**
 * Three tiers, assigned by where a file lives so that a new file lands in one without editing this list:
 * - unit: test/unit/**, no database and no child process; starts nothing (no global setup), runs in seconds.
 * - system: test/system/** and any *-e2e.test.ts: spawns processes, npm, Jaeger, Prometheus, PgBouncer.
 * - db: every other test file (test/*.test.ts, test/regressions/, test/attacks/ …), in-process on a real
 *   Postgres server and PGlite. The default, since a file that needs no database still passes with one.
 * `npm test` runs all three; `npm run test:unit` (or `vitest --project unit`) only the first.
 */
const UNIT = ['test/unit/**/*.test.ts'];
const SYSTEM = ['test/system/**/*.test.ts', 'test/**/*-e2e.test.ts'];
// A real Postgres server for the tiers that need one (DATABASE_URL, or an embedded one started there).
const POSTGRES = ['test/global-setup.ts'];

export default defineConfig({
  // Empty unless KOA_IDEMPOTENCY_OTEL_SDK=2: then the OpenTelemetry packages are SDK 2's (test/sdk2).
  resolve: { alias: sdk2Aliases() },
  test: {
    // Files run in parallel (each owns a schema); child processes and real Postgres need real time.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT } },
      { extends: true, test: { name: 'db', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, ...UNIT, ...SYSTEM], globalSetup: POSTGRES } },
      { extends: true, test: { name: 'system', include: SYSTEM, globalSetup: POSTGRES } },
    ],
  },
});
