import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError } from '../../src/index.js';
import { PostgresStore, type PostgresStoreOptions } from '../../src/entries/postgres.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on PostgresStore's numeric options, as a JavaScript caller passes them. idempotency() now
 * bounds its timers by the longest Node timer (2147483647 ms) and wants integers; the store's options do not:
 * Node runs a longer interval after 1 ms, so a monthly sweep (30 days, 2592000000 ms) sweeps back to back, and
 * a poll interval over the bound re-reads a waiting duplicate's record every millisecond; a fractional batch
 * size fails every sweep in Postgres (LIMIT takes a bigint). Each must be refused at construction with an
 * IdempotencyConfigError, or work as asked.
 */

const THIRTY_DAYS_MS = 30 * 24 * 60 * 60 * 1000;

/** Pool checkouts (each a statement or a transaction) until `limit` are counted or `windowMs` passes. */
function checkouts(pool: pg.Pool, limit: number, windowMs: number): Promise<number> {
  return new Promise((resolve) => {
    let count = 0;
    const done = () => {
      clearTimeout(timer);
      pool.off('acquire', onAcquire);
      resolve(count);
    };
    const onAcquire = () => {
      if (++count >= limit) done();
    };
    const timer = setTimeout(done, windowMs);
    pool.on('acquire', onAcquire);
  });
}

describe('PostgresStore options that Node timers or Postgres cannot honour', () => {
  let db: TestDatabase;
  const closing: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_store_timers');
    await db.store();
  });
  afterAll(async () => {
    for (const close of closing.splice(0)) await close();
    await db?.close();
  });

  /** The store, or `refused` when its construction threw an IdempotencyConfigError. */
  function storeOn(pool: pg.Pool, options: Omit<PostgresStoreOptions, 'pool'>): PostgresStore | 'refused' {
    try {
      const store = new PostgresStore({ pool, schema: db.schema, ...options });
      closing.push(() => store.close());
      return store;
    } catch (error) {
      if (error instanceof IdempotencyConfigError) return 'refused';
      throw error;
    }
  }

  it('sweepIntervalMs of 30 days is refused at construction, or an idle store does not sweep in the next second', async () => {
    const pool = db.newPool!(2);
    const watching = checkouts(pool, 50, 1_000);
    if (storeOn(pool, { sweepIntervalMs: THIRTY_DAYS_MS }) === 'refused') return;
    expect(await watching).toBe(0);
  });

  it('sweepBatchSize 1.5 is refused at construction, or sweep() works', async () => {
    const store = storeOn(db.newPool!(2), { sweepBatchSize: 1.5 });
    if (store === 'refused') return;
    const swept = await store.sweep().then(
      (deleted) => ({ deleted }),
      (error: unknown) => ({ error: (error as Error).message }),
    );
    expect(swept).toEqual({ deleted: expect.any(Number) });
  });

  /**
   * A duplicate in 'wait' mode re-reads the record at most every waitRecheckMs (backing off from 25 ms to
   * 250 ms): a handful of reads a second. A poll interval Node runs after 1 ms re-reads it a thousand times.
   */
  it('pollIntervalMs past the longest Node timer is refused at construction, or a waiting duplicate does not re-read its record every millisecond', async () => {
    const pool = db.newPool!(4);
    const store = storeOn(pool, { waitStrategy: 'poll', pollIntervalMs: 3e9 });
    if (store === 'refused') return;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const firstStarted = new Promise<void>((resolve) => (started = resolve));
    const { app } = createTestApp({
      store,
      options: { onInProgress: 'wait', waitMs: 10_000 },
      respond: async (ctx) => {
        started();
        await released;
        ctx.status = 201;
        ctx.body = { order: 1 };
      },
    });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = `poll-${Date.now()}`;
    const first = postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    await firstStarted;
    const reads = checkouts(pool, 50, 1_000);
    const duplicate = postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const counted = await reads;
    release();
    await Promise.all([first, duplicate]);
    expect(counted).toBeLessThan(50);
  });
});
