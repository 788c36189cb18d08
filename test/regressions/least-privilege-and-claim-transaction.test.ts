import { randomBytes } from 'node:crypto';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { diag, DiagLogLevel } from '@opentelemetry/api';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { idempotency, type ClaimRequest, type SqlQueryable } from '../../src/index.js';
import { PostgresStore, type PartitioningOptions } from '../../src/entries/postgres.js';
import { ATTR, METRIC } from '../../src/entries/otel.js';
import { transactionControlError } from '../../src/store/transaction-control.js';
import { DATABASE_URL, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { recordsExpired } from '../helpers/record-clock.js';
import { until } from '../helpers/events.js';
import { freshMetricsPerTest } from '../telemetry-harness.js';

/**
 * Store defects of issue 14, each as the test that showed it: a partitioned sweep under the least-privilege
 * role SECURITY.md recommends, and a handler ending the claim's transaction through `ctx.idempotency.db`.
 */

/** What the library said through diag, by level. */
const said: { error: unknown[][]; warn: unknown[][] } = { error: [], warn: [] };
diag.setLogger(
  {
    error: (...args) => void said.error.push(args),
    warn: (...args) => void said.warn.push(args),
    info: () => undefined,
    debug: () => undefined,
    verbose: () => undefined,
  },
  DiagLogLevel.WARN,
);

const reader = freshMetricsPerTest();

beforeEach(() => {
  said.error.length = 0;
  said.warn.length = 0;
});
afterAll(() => diag.disable());

function request(key: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return { scope: 'tenant-a', key, fingerprint: 'fp-1', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3600, ...overrides };
}

/** Data points of one instrument, with their attributes. */
async function dataPoints(name: string): Promise<Array<{ attributes: Record<string, unknown>; value: unknown }>> {
  const collected = await reader().read();
  const metric = collected.scopeMetrics.flatMap((scope) => scope.metrics).find((candidate) => candidate.descriptor.name === name);
  return metric?.dataPoints ?? [];
}

describe('the least-privilege role SECURITY.md recommends (Postgres server: roles)', () => {
  const partitioning: PartitioningOptions = { intervalSeconds: 1, premadePartitions: 1 };
  const role = `koa_idem_lp_${randomBytes(4).toString('hex')}`;
  let db: TestDatabase;
  let rolePool: pg.Pool;
  let tables = 0;

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('hardening_roles');
    const password = randomBytes(12).toString('hex');
    await db.sql.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await db.sql.query(`GRANT USAGE ON SCHEMA "${db.schema}" TO ${role}`);
    const url = new URL(DATABASE_URL);
    url.username = role;
    url.password = password;
    rolePool = new pg.Pool({ connectionString: url.toString(), max: 3 });
    rolePool.on('error', () => undefined);
  });
  afterAll(async () => {
    await rolePool?.end();
    await db?.sql.query(`DROP OWNED BY ${role}`).catch(() => undefined);
    await db?.sql.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
    await db?.close();
  });

  /**
   * A partitioned table migrated by the owner, and a store on it connected as the role, which has only
   * SELECT, INSERT, UPDATE, DELETE on the table and USAGE on its sequence: it can claim, but it may not
   * create or drop partitions (42501).
   */
  async function leastPrivilegeStore(options: { sweepIntervalMs?: number } = {}): Promise<{ store: PostgresStore; table: string }> {
    const table = `lp_records_${++tables}`;
    await db.store({ table, partitioning, replayCacheEntries: 0 });
    await db.sql.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON "${db.schema}"."${table}" TO ${role}`);
    await db.sql.query(`GRANT USAGE ON SEQUENCE "${db.schema}"."${table}_fence_seq" TO ${role}`);
    const store = new PostgresStore({ pool: rolePool, schema: db.schema, table, partitioning, replayCacheEntries: 0, ...options });
    return { store, table };
  }

  /** Records that expire in a second, claimed by the role; then time passes until they and their partitions have ended. */
  async function expiredRecords(store: PostgresStore, table: string, prefix: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) expect((await store.claim(request(`${prefix}-${i}`, { ttlSeconds: 1, leaseMs: 100 }))).kind).toBe('claimed');
    await recordsExpired(db.sql, `"${db.schema}"."${table}"`);
  }

  async function rowCount(table: string): Promise<number> {
    const { rows } = await db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${db.schema}"."${table}"`);
    return rows[0]!.n;
  }

  it('runs the lifecycle of a plain table with DML grants only: no sequence to grant, and waiters announce themselves without a grant', async () => {
    const table = `lp_plain_${++tables}`;
    await db.store({ table, replayCacheEntries: 0 });
    await db.sql.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON "${db.schema}"."${table}" TO ${role}`);
    const store = new PostgresStore({ pool: rolePool, schema: db.schema, table, replayCacheEntries: 0 });
    try {
      const leased = await store.claim(request('plain-lease'));
      if (leased.kind !== 'claimed') throw new Error(`expected a claim, got ${leased.kind}`);
      const watch = await store.watch('tenant-a', 'plain-lease');
      await store.complete(leased.lease, { replayable: false, status: 201 });
      expect(await watch.next(5_000)).toBe('changed');
      watch.close();
      expect((await store.claim(request('plain-lease'))).kind).toBe('existing');

      const transactional = await store.claimInTransaction(request('plain-transactional'));
      if (transactional.kind !== 'claimed') throw new Error(`expected a claim, got ${transactional.kind}`);
      await transactional.commit({ replayable: false, status: 201 });
      expect((await store.claimInTransaction(request('plain-transactional'))).kind).toBe('existing');

      await store.claim(request('plain-expired', { ttlSeconds: 1, leaseMs: 100 }));
      await recordsExpired(db.sql, `"${db.schema}"."${table}"`, ['plain-expired']);
      expect(await store.sweep()).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('still sweeps expired rows when partition maintenance is denied, then fails with the SQLSTATE and records it on the store metric', async () => {
    const { store, table } = await leastPrivilegeStore();
    await expiredRecords(store, table, 'denied', 5);

    const outcome = await store.sweep().then(
      (deleted) => ({ deleted }),
      (error: unknown) => error,
    );
    expect(outcome).toMatchObject({ code: '42501' });
    expect(await rowCount(table)).toBe(0);
    const swept = await dataPoints(METRIC.RECORDS_SWEPT);
    expect(swept.reduce((sum, point) => sum + Number(point.value), 0)).toBe(5);
    const failures = (await dataPoints(METRIC.STORE_OPERATION_DURATION)).filter((point) => point.attributes[ATTR.ERROR_TYPE] !== undefined);
    expect(failures.map((point) => point.attributes)).toEqual([{ [ATTR.OPERATION]: 'sweep', [ATTR.ERROR_TYPE]: '42501' }]);
    await store.close();
  });

  it('reports a denied partition maintenance of the periodic sweeper through diag by default, and sweeps the rows anyway', async () => {
    const { store, table } = await leastPrivilegeStore({ sweepIntervalMs: 200 });
    try {
      await expiredRecords(store, table, 'periodic', 3);
      // The sweeper runs every 200 ms: wait for a run that both reported the denial and deleted the rows.
      await until(async () => (said.error.length > 0 && (await rowCount(table)) === 0 ? true : undefined), 'a periodic sweep', 5_000);
      expect(await rowCount(table)).toBe(0);
      expect(said.error.length).toBeGreaterThan(0);
      const [message, error] = said.error[0]!;
      expect(message).toMatch(/sweep/);
      expect(error).toMatchObject({ code: '42501' });
    } finally {
      await store.close();
    }
  });
});

describe('the statements refused on a claim transaction', () => {
  it.each([
    'COMMIT',
    'commit work',
    '  begin;',
    'START TRANSACTION',
    'END',
    'ABORT',
    'ROLLBACK',
    'rollback and chain',
    "PREPARE TRANSACTION 'x'",
    '/* a /* nested */ comment */ COMMIT',
    '-- note\nCOMMIT',
    '; ;COMMIT',
  ])('refuses %j', (text) => {
    expect(transactionControlError(text)?.code).toBe('TRANSACTION_CONTROL');
  });

  it.each([
    'SAVEPOINT s1',
    'ROLLBACK TO SAVEPOINT s1',
    'rollback to s1',
    'ROLLBACK WORK TO s1',
    'RELEASE SAVEPOINT s1',
    'SELECT 1',
    'INSERT INTO ends (x) VALUES (1)',
    'PREPARE q AS SELECT 1',
    '/* COMMIT */ SELECT 1',
  ])('lets %j through', (text) => {
    expect(transactionControlError(text)).toBeUndefined();
  });
});

describe.each(databaseTargets({ pipelined: true }))("a transactional handler that ends the claim's transaction itself, on $name", (target) => {
  const onServer = target.name !== 'PGlite';
  const serverOnly = (name: string) => (onServer ? name : `${name} (skipped on PGlite: it runs one statement per query)`);
  let db: TestDatabase;
  let charges: string;

  beforeAll(async () => {
    db = await target.open('hardening_tx');
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL)`);
  });
  afterAll(() => db?.close());

  /** A transactional app whose handler writes a charge through `write(db, key)` and answers 201. */
  async function app(write: (db: SqlQueryable, key: string, execution: number) => Promise<void>) {
    const store = await db.store({ replayCacheEntries: 0 });
    let executions = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(bodyParser());
    koa.use(idempotency({ store, transactional: true }));
    koa.use(async (ctx) => {
      executions++;
      await write(ctx.idempotency!.db!, ctx.idempotency!.key, executions);
      ctx.status = 201;
      ctx.body = { charged: true };
    });
    return { store, server: await serve(koa), executions: () => executions };
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);

  it('refuses a COMMIT sent through ctx.idempotency.db: an error answer, and neither the charge nor the claim is committed', async () => {
    const { store, server } = await app(async (tx, key) => {
      await tx.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [key]);
      await tx.query('COMMIT');
    });
    try {
      const answer = await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'db-commit' });
      expect(answer.status).toBe(500);
      expect(await chargesOf('db-commit')).toBe(0);
      expect(await store.find('', 'db-commit')).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it("still lets the handler nest with savepoints, as a query builder's nested transaction does", async () => {
    const { store, server } = await app(async (tx, key) => {
      await tx.query('SAVEPOINT nested');
      await tx.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [`${key}-undone`]);
      await tx.query('ROLLBACK TO SAVEPOINT nested');
      await tx.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [key]);
      await tx.query('RELEASE SAVEPOINT nested');
    });
    try {
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'savepoints' })).status).toBe(201);
      expect([await chargesOf('savepoints'), await chargesOf('savepoints-undone')]).toEqual([1, 0]);
      expect((await store.find('', 'savepoints'))?.replayable).toBe(true);
    } finally {
      await server.close();
    }
  });

  it.skipIf(!onServer)(serverOnly('refuses a text of several statements (a COMMIT behind a SELECT): nothing committed early, and the retry charges once'), async () => {
    const { store, server, executions } = await app(async (tx, key, execution) => {
      await tx.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [key]);
      if (execution === 1) await tx.query('SELECT 1; COMMIT'); // Postgres runs one statement per extended-protocol text
    });
    try {
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'hidden-commit' })).status).toBe(500);
      expect([await chargesOf('hidden-commit'), await store.find('', 'hidden-commit')]).toEqual([0, undefined]);
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'hidden-commit' })).status).toBe(201);
      expect([executions(), await chargesOf('hidden-commit')]).toEqual([2, 1]);
    } finally {
      await server.close();
    }
  });
});
