import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type SqlQueryable } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { until } from '../helpers/events.js';

/**
 * Two defects of the claim and completion path, each pinned by a test that failed before its fix:
 * - concurrent retries of a completed key, answered by a process whose replay cache is cold, are all
 *   replays (the transactional claim used to take the key's lock first and answer some of them 409);
 * - a record's expiry counts from its completion (it counted from the claim, so a handler slower than
 *   the TTL committed an already expired record, and a lease-mode record expired about `leaseMs` after
 *   its completion: a retry moments later ran the operation again).
 */
const server = POSTGRES_SERVER;
const layouts = [
  { layout: 'a plain table', table: 'defects_plain', partitioning: false as const },
  { layout: 'a table partitioned by time', table: 'defects_partitioned', partitioning: { intervalSeconds: 3600 } },
];
const modes = [
  { mode: 'lease mode', transactional: false },
  { mode: 'transactional mode', transactional: true },
];

let db: TestDatabase;
beforeAll(async () => {
  db = await server.open('hot_path_defects');
  await db.sql.query(`CREATE TABLE "${db.schema}".executions (key text NOT NULL)`);
});
afterAll(() => db?.close());

/** Resolves once `key`'s record in `table` was claimed more than `seconds` ago, by Postgres's clock (as `now()` in a transaction stands still). */
async function claimedAgo(sql: SqlQueryable, table: string, key: string, seconds: number): Promise<void> {
  const text = `SELECT clock_timestamp() > created_at + make_interval(secs => $2) AS past FROM ${table} WHERE key = $1`;
  await until(async () => ((await sql.query<{ past: boolean }>(text, [key, seconds])).rows[0]?.past ? true : undefined), `the claim of ${key} older than ${seconds} s`);
}

/**
 * POST /pay: records one execution (through the claim's transaction in transactional mode), answers 201.
 * With `slowIn` (the records' table) the handler first outlasts the TTL counted from its claim: the case under test.
 */
async function startApp(database: TestDatabase, store: PostgresStore, options: { transactional: boolean; slowIn?: string; ttlSeconds?: number; leaseMs?: number }) {
  const ttlSeconds = options.ttlSeconds ?? 3600;
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser());
  app.use(idempotency({ store, transactional: options.transactional, ttlSeconds, leaseMs: options.leaseMs ?? 30_000 }));
  app.use(async (ctx) => {
    const key = ctx.get('Idempotency-Key');
    const sql = ctx.idempotency?.db ?? database.sql;
    await sql.query(`INSERT INTO "${database.schema}".executions (key) VALUES ($1)`, [key]);
    if (options.slowIn) await claimedAgo(sql, `"${database.schema}"."${options.slowIn}"`, key, ttlSeconds);
    ctx.status = 201;
    ctx.body = { paid: key };
  });
  return serve(app);
}

const executions = (database: TestDatabase, key: string) => rowsWithKey(database.sql, `"${database.schema}".executions`, key);

describe.each(layouts)(`concurrent retries of a completed key on ${server.name}, $layout`, ({ table, partitioning }) => {
  it.each(modes)('are all replays in $mode, from a process whose replay cache is cold', async ({ mode, transactional }) => {
    const key = `completed-${table}-${transactional}`;
    const first = await startApp(db, await db.store({ table, partitioning }), { transactional });
    // A second "process": its own store, pool and empty replay cache, as after a deploy or on another instance.
    const coldStore = new PostgresStore({ pool: db.newPool!(10), schema: db.schema, table, partitioning });
    const cold = await startApp(db, coldStore, { transactional });
    try {
      expect((await postJson(first.url, { amount: 1 }, { key })).status).toBe(201);
      const retries = await Promise.all(Array.from({ length: 50 }, () => postJson(cold.url, { amount: 1 }, { key })));
      const statuses = retries.map((retry) => retry.status);
      expect(
        statuses.filter((status) => status !== 201),
        `${mode}: ${statuses.join(' ')}`,
      ).toEqual([]);
      expect(new Set(retries.map((retry) => retry.text))).toEqual(new Set([JSON.stringify({ paid: key })]));
      expect(await executions(db, key)).toBe(1);
    } finally {
      await Promise.all([first.close(), cold.close()]);
      await coldStore.close();
    }
  });
});

describe.each(databaseTargets())('a record expires ttlSeconds after its completion, on $name', (target) => {
  let own: TestDatabase;
  beforeAll(async () => {
    own = await target.open('ttl_from_completion');
    await own.sql.query(`CREATE TABLE "${own.schema}".executions (key text NOT NULL)`);
  });
  afterAll(() => own?.close());

  it.each(modes)('in $mode: a handler slower than the TTL leaves a record that a retry right after replays', async ({ transactional }) => {
    const table = `ttl_slow_${transactional}`;
    const store = await own.store({ table, replayCacheEntries: 0 });
    const app = await startApp(own, store, { transactional, slowIn: table, ttlSeconds: 1, leaseMs: 500 });
    try {
      const key = `slow-${transactional}`;
      expect((await postJson(app.url, {}, { key })).status).toBe(201);
      const retry = await postJson(app.url, {}, { key });
      expect(retry.status).toBe(201);
      expect(await executions(own, key)).toBe(1);
      const record = await store.find('', key);
      expect(record?.status).toBe('completed');
      const keptMs = record!.expiresAt.getTime() - record!.completedAt!.getTime();
      expect(keptMs).toBeGreaterThan(900);
      expect(keptMs).toBeLessThan(1_100);
    } finally {
      await app.close();
    }
  });

  it('in lease mode: a retry more than leaseMs after a slow request completed is a replay (ttlSeconds 1, leaseMs 500)', async () => {
    const store = await own.store({ table: 'ttl_lease', replayCacheEntries: 0 });
    const app = await startApp(own, store, { transactional: false, slowIn: 'ttl_lease', ttlSeconds: 1, leaseMs: 500 });
    try {
      expect((await postJson(app.url, {}, { key: 'slow-lease' })).status).toBe(201);
      // The retry comes once the record would have expired had its expiry counted from the lease (the defect).
      const text = `SELECT clock_timestamp() > completed_at + interval '500 milliseconds' AS past FROM "${own.schema}".ttl_lease WHERE key = $1`;
      await until(async () => ((await own.sql.query<{ past: boolean }>(text, ['slow-lease'])).rows[0]?.past ? true : undefined), 'leaseMs past the completion');
      expect((await postJson(app.url, {}, { key: 'slow-lease' })).status).toBe(201);
      expect(await executions(own, 'slow-lease')).toBe(1);
    } finally {
      await app.close();
    }
  });
});
