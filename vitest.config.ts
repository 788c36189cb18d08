import { defineConfig } from 'vitest/config';

export default defineConfig({
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
