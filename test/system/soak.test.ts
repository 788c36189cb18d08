import { describe, expect, it } from 'vitest';
import { runSoak } from '../../scripts/soak.js';
import { DATABASE_URL } from '../helpers/databases.js';

/**
 * The short version of `npm run soak`: a few seconds of mixed traffic on loopback, on the Postgres server,
 * with faults injected between the app and Postgres.
 */
describe('soak, quick (Postgres server, with faults)', () => {
  it('loses no operation, doubles none, never hangs and leaves no record stuck', { timeout: 120_000 }, async () => {
    const report = await runSoak({ seconds: 8, clients: 4, chaos: true, lease: false, sampleEveryMs: 1_000, databaseUrl: DATABASE_URL, log: () => undefined });

    expect(report.requests).toBeGreaterThan(50);
    expect(report.samples.length).toBeGreaterThan(3);
    expect(report.errors).toEqual([]);
    expect(report.hangs).toBe(0);
    expect(report.lost).toBe(0);
    expect(report.doubled).toBe(0);
    expect(report.stuckRecords).toBe(0);
  });
});
