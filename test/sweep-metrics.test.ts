import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClaimRequest } from '../src/index.js';
import { METRIC } from '../src/entries/otel.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { recordsExpired } from './helpers/record-clock.js';
import { freshMetricsPerTest } from './telemetry-harness.js';

/**
 * `idempotency.records.swept` counts every completed sweep, 0 included: a sweeper with nothing to delete
 * shows "swept 0" on the dashboard instead of "No data", which would look like a sweeper that never runs.
 */
const reader = freshMetricsPerTest();

/** The counter's total, or undefined when it has no series. */
async function sweptTotal(): Promise<number | undefined> {
  const collected = await reader().read();
  const counter = collected.scopeMetrics.flatMap((scope) => scope.metrics).find((metric) => metric.descriptor.name === METRIC.RECORDS_SWEPT);
  return counter?.dataPoints.reduce((sum, point) => sum + (point.value as number), 0);
}

function expiringRequest(key: string): ClaimRequest {
  return { scope: 'tenant-a', key, fingerprint: 'fp-1', fingerprintVersion: 1, leaseMs: 100, ttlSeconds: 1 };
}

describe.each(databaseTargets())('records swept on $name', (target) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await target.open('sweep_metrics');
  });
  afterAll(() => db?.close());

  it('adds 0 for a sweep of a plain table that deletes nothing, then what a sweep deletes', async () => {
    const store = await db.store({ table: 'swept_plain' });
    expect(await store.sweep()).toBe(0);
    expect(await sweptTotal()).toBe(0);

    for (let i = 0; i < 3; i++) await store.claim(expiringRequest(`expiring-${i}`));
    await recordsExpired(db.sql, `"${db.schema}".swept_plain`);
    expect(await store.sweep()).toBe(3);
    expect(await sweptTotal()).toBe(3);
  });

  it('adds 0 for a sweep of a partitioned table that drops and deletes nothing', async () => {
    const store = await db.store({ table: 'swept_partitioned', partitioning: { intervalSeconds: 3600 } });
    expect(await store.sweep()).toBe(0);
    expect(await sweptTotal()).toBe(0);
  });
});
