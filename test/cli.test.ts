import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { context, propagation, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { TracerProvider } from '@opentelemetry/sdk-trace';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../examples/payments/app.js';
import { FINGERPRINT_VERSION, type ClaimRequest } from '../src/index.js';
import { fromPgPool, migrationSql, PostgresStore } from '../src/entries/postgres.js';
import { correlationIdFor } from '../src/entries/otel.js';
import { commandError } from '../src/cli/connection.js';
import { runCli } from '../src/cli/run.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { leaseLapsed, recordsExpired } from './helpers/record-clock.js';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, for `--json` runs. */
  json: any;
}

/**
 * Runs the CLI in this process through `runCli`, the function `koa-idempotency` (src/cli/main.ts) is a shell
 * around: the same arguments, environment, output and exit code, without a Node start per run.
 * test/system/cli-binary.test.ts runs the real executable.
 */
async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete cliEnv[name];
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, cliEnv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code, stdout, stderr, json };
}

describe.concurrent('koa-idempotency CLI without a database', () => {
  it('prints the usage with the exit codes on --help and exits 0', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: koa-idempotency <command>');
    for (const command of ['migrate', 'sweep', 'inspect', 'stats', 'forget']) expect(run.stdout).toContain(command);
    expect(run.stdout).toContain('Exit codes: 0 ok, 1 inspect or forget found no record, 2 usage error');
  });

  it('prints the help of one command', async () => {
    const run = await cli(['inspect', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: koa-idempotency inspect (--key K [--scope S] | --instance URN)');
  });

  it('documents the partitioning flags, and where sweep takes the interval from', async () => {
    const [migrate, sweep] = await Promise.all([cli(['migrate', '--help']), cli(['sweep', '--help'])]);
    expect(migrate.stdout).toContain('Usage: koa-idempotency migrate [--print-sql] [--partitioned [--partition-interval-seconds N] [--premade-partitions N]]');
    expect(sweep.stdout).toContain('Usage: koa-idempotency sweep [--batch-size N] [--max-batches N] [--partition-interval-seconds N] [--premade-partitions N]');
    expect(sweep.stdout).toMatch(/default: the range of the table's newest partition/);
  });

  it.each([
    [['frob'], /unknown command "frob"/],
    [[], /a command is required/],
    [['stats', '--key', 'k'], /stats does not take --key/],
    [['stats', '--bogus'], /Unknown option '--bogus'/],
    [['stats', 'extra'], /unexpected argument "extra"/],
    [['inspect'], /inspect needs either --key or --instance/],
    [['sweep', '--batch-size', '0'], /--batch-size must be a positive integer/],
    [['sweep', '--max-batches', '1.5'], /--max-batches must be a positive integer/],
    [['stats', '--table', 'x; DROP TABLE y'], /--table must match/],
    [['inspect', '--key', 'k', '--jaeger-url', 'ftp://jaeger'], /the Jaeger URL must be an http\(s\) URL/],
    [['migrate', '--partition-interval-seconds', '60'], /--partition-interval-seconds needs --partitioned/],
    [['migrate', '--premade-partitions', '1'], /--premade-partitions needs --partitioned/],
    [['migrate', '--partitioned', '--partition-interval-seconds', '0'], /--partition-interval-seconds must be a positive integer; got "0"/],
    [['migrate', '--partitioned', '--partition-interval-seconds', '1e3'], /--partition-interval-seconds must be a positive integer/],
    [['migrate', '--partitioned', '--premade-partitions', '1.5'], /--premade-partitions must be zero or a positive integer; got "1.5"/],
    [['sweep', '--premade-partitions=-1'], /--premade-partitions must be zero or a positive integer; got "-1"/],
    [['sweep', '--partition-interval-seconds', 'day'], /--partition-interval-seconds must be a positive integer/],
    [['sweep', '--partitioned'], /sweep does not take --partitioned/],
    [['stats', '--partition-interval-seconds', '60'], /stats does not take --partition-interval-seconds/],
  ])('exits 2 with a clear message for the usage error %j', async (args, message) => {
    const run = await cli(args, { DATABASE_URL: 'postgres://127.0.0.1:1/none' });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stdout).toBe('');
  });

  it('reports a usage error as one JSON document with --json', async () => {
    const run = await cli(['frob', '--json']);
    expect(run.code).toBe(2);
    expect(run.json).toEqual({ error: { code: 'usage', message: expect.stringContaining('unknown command') } });
  });

  it('exits 2 when DATABASE_URL is unset', async () => {
    const run = await cli(['stats', '--json'], { DATABASE_URL: undefined });
    expect(run.code).toBe(2);
    expect(run.json.error.code).toBe('database_url_missing');
  });

  it.each(['not a url', 'mysql://root@127.0.0.1/db', 'postgres://user@host:99999999/db'])('exits 2 for the malformed DATABASE_URL %j', async (url) => {
    const run = await cli(['stats'], { DATABASE_URL: url });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/DATABASE_URL (is not a valid URL|must start with postgres:\/\/)/);
  });

  it('exits 3 when nothing listens at DATABASE_URL, without printing the password', async () => {
    const run = await cli(['stats', '--json'], { DATABASE_URL: 'postgres://user:s3cret@127.0.0.1:1/test' });
    expect(run.code).toBe(3);
    expect(run.json.error.code).toBe('unreachable');
    expect(run.json.error.message).toContain('127.0.0.1:1/test');
    expect(run.stdout).not.toContain('s3cret');
  });

  it('prints the migration SQL for the given table without connecting', async () => {
    const run = await cli(['migrate', '--print-sql', '--schema', 'billing', '--table', 'keys'], { DATABASE_URL: undefined });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('CREATE TABLE IF NOT EXISTS "billing"."keys"');
    expect(run.stdout).not.toContain('PARTITION');
  });

  it('prints the partitioned migration SQL with --partitioned, as the store makes it', async () => {
    const run = await cli(['migrate', '--print-sql', '--partitioned', '--schema', 'billing', '--table', 'keys'], { DATABASE_URL: undefined });
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(migrationSql({ schema: 'billing', table: 'keys', partitioning: true }));
    expect(run.stdout).toContain(') PARTITION BY RANGE (created_at);');
    expect(run.stdout).toContain('CREATE TABLE IF NOT EXISTS "billing"."keys_default" PARTITION OF "billing"."keys" DEFAULT');
    expect(run.stdout).toContain('CREATE OR REPLACE FUNCTION "billing"."keys_claim"(');
  });
});

describe('koa-idempotency CLI on the Postgres server', () => {
  const schema = uniqueSchema('cli');
  const inSchema = ['--schema', schema];
  let pool: pg.Pool;
  let store: PostgresStore;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 5 });
    store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
  });
  afterAll(async () => {
    await store?.close();
    await pool?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool?.end();
  });

  const claim = (key: string, overrides: Partial<ClaimRequest> = {}) =>
    store.claim({ scope: 'cli', key, fingerprint: 'fp', fingerprintVersion: FINGERPRINT_VERSION, leaseMs: 30_000, ttlSeconds: 3600, ...overrides });

  /** Records that expire at once: claimed and completed with a TTL of one millisecond. */
  async function expiredRecords(prefix: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const result = await claim(`${prefix}-${i}`, { ttlSeconds: 0.001 });
      if (result.kind !== 'claimed') throw new Error('expected a fresh claim');
      await store.complete(result.lease, { replayable: false, status: 204 });
    }
    await recordsExpired(
      pool,
      records(),
      Array.from({ length: count }, (_, i) => `${prefix}-${i}`),
    );
  }

  /** The records table the CLI reads, schema-qualified. */
  const records = () => `"${schema}".idempotency_records`;

  describe('a missing table', () => {
    it.each([['stats'], ['sweep'], ['inspect', '--key', 'k']])('makes %s exit 3 and say to run migrate', async (...args) => {
      const run = await cli([...args, ...inSchema, '--json']);
      expect(run.code).toBe(3);
      expect(run.json.error.code).toBe('table_missing');
      expect(run.json.error.message).toContain('koa-idempotency migrate');
    });
  });

  describe('migrate', () => {
    it('creates the records table, and a second run changes nothing', async () => {
      const first = await cli(['migrate', ...inSchema]);
      expect(first.code).toBe(0);
      expect(first.stdout).toContain(`"${schema}"."idempotency_records" is up to date`);
      const { rows } = await pool.query(`SELECT to_regclass($1) AS name`, [`"${schema}".idempotency_records`]);
      expect(rows[0].name).not.toBeNull();

      const second = await cli(['migrate', ...inSchema, '--json']);
      expect(second.code).toBe(0);
      expect(second.json).toMatchObject({ migrated: true, schema, table: 'idempotency_records' });
    });
  });

  describe('stats', () => {
    it('counts records by status, with the oldest in-progress age and the lapsed leases', async () => {
      await claim('stats-running');
      await claim('stats-lapsed', { leaseMs: 1 });
      const done = await claim('stats-done');
      if (done.kind !== 'claimed') throw new Error('expected a fresh claim');
      await store.complete(done.lease, { replayable: false, status: 204 });
      await leaseLapsed(pool, records(), 'stats-lapsed');
      // The oldest in-progress record is at least 20 ms old by Postgres's clock, which stats reads.
      const age = `SELECT now() - created_at >= interval '20 milliseconds' AS old FROM ${records()} WHERE key = 'stats-running'`;
      await until(async () => ((await pool.query<{ old: boolean }>(age)).rows[0]?.old ? true : undefined), 'stats-running 20 ms old');

      const [json, text] = await Promise.all([cli(['stats', ...inSchema, '--json']), cli(['stats', ...inSchema])]);
      expect(json.code).toBe(0);
      expect(json.json.byStatus).toEqual([
        { status: 'in_progress', records: 2, oldestAgeMs: expect.any(Number), lapsedLeases: 1 },
        { status: 'completed', records: 1, oldestAgeMs: expect.any(Number), lapsedLeases: 0 },
      ]);
      expect(json.json).toMatchObject({ totalRecords: 3, lapsedLeases: 1, oldestInProgressAgeMs: expect.any(Number) });
      expect(json.json.oldestInProgressAgeMs).toBeGreaterThanOrEqual(20);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/^status\s+records\s+oldest\s+lapsed leases\nin_progress\s+2\s+\S+ m?s\s+1\ncompleted\s+1\s/);
    });
  });

  describe('sweep', () => {
    it('deletes every expired record, batch after batch, and keeps the others', async () => {
      await expiredRecords('sweep-all', 3);
      const before = await store.stats();
      const run = await cli(['sweep', ...inSchema, '--batch-size', '2', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({ deleted: 3, durationMs: expect.any(Number) });
      const after = await store.stats();
      const total = (stats: typeof before) => stats.reduce((sum, row) => sum + row.records, 0);
      expect(total(before) - total(after)).toBe(3);
      expect(await store.find('cli', 'stats-running')).toBeDefined();
    });

    it('stops after --max-batches', async () => {
      await expiredRecords('sweep-bounded', 3);
      const run = await cli(['sweep', ...inSchema, '--batch-size', '1', '--max-batches', '2']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^deleted 2 expired records in \d+ ms\n$/);
      const rest = await cli(['sweep', ...inSchema, '--json']);
      expect(rest.json.deleted).toBe(1);
    });
  });

  describe('inspect', () => {
    /** The trace the client started: the server span of the first request is its child. */
    const originalTraceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const replayTraceId = '0af7651916cd43dd8448eb211c80319c';
    const account = 'acct_cli';
    const key = 'order-4711';
    let provider: TracerProvider;
    let server: Server;
    let url: string;

    /** A Koa app behind a server span that continues the caller's traceparent, as the HTTP instrumentation does. */
    beforeAll(async () => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      propagation.setGlobalPropagator(new W3CTraceContextPropagator());
      provider = new TracerProvider();
      trace.setGlobalTracerProvider(provider);
      const tracer = trace.getTracer('cli-test');

      for (const statement of paymentsSchemaSql(schema).split(';\n')) await pool.query(statement);
      const app = createPaymentsApp({ store, sql: fromPgPool(pool), schema });
      app.silent = true;
      const handle = app.callback();
      server = createServer((req, res) => {
        const parent = propagation.extract(ROOT_CONTEXT, req.headers);
        const span = tracer.startSpan(`${req.method} ${req.url}`, { kind: SpanKind.SERVER }, parent);
        res.on('close', () => span.end());
        // Koa's callback answers its own errors (a 500 and app.onerror): nothing is left to await here.
        void context.with(trace.setSpan(parent, span), () => handle(req, res));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/payments`;
    });
    afterAll(async () => {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
      await provider?.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    });

    const pay = (traceId: string) =>
      fetch(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${account}`,
          'idempotency-key': key,
          'content-type': 'application/json',
          traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        },
        body: JSON.stringify({ amount: 1250, currency: 'EUR' }),
      });

    it('finds the original trace ID of a replayed request, with its Jaeger URL', async () => {
      const beforeFirstMs = Date.now();
      const first = await pay(originalTraceId);
      const afterFirstMs = Date.now();
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      const replay = await pay(replayTraceId);
      expect(replay.status).toBe(201);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');

      const beforeInspectMs = Date.now();
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', key, '--jaeger-url', 'http://jaeger.test:16686/', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        scope: account,
        key,
        status: 'completed',
        attempt: 1,
        fingerprintVersion: FINGERPRINT_VERSION,
        responseStatus: 201,
        replayable: true,
        correlationId: correlationIdFor(account, key),
        traceId: originalTraceId,
        jaegerUrl: `http://jaeger.test:16686/trace/${originalTraceId}`,
      });
      expect(run.json.traceparent).toMatch(new RegExp(`^00-${originalTraceId}-[0-9a-f]{16}-01$`));
      // The record's age lies between what the clock saw around the first request and the inspection.
      expect(run.json.ageMs).toBeGreaterThanOrEqual(beforeInspectMs - afterFirstMs - 1);
      expect(run.json.ageMs).toBeLessThanOrEqual(Date.now() - beforeFirstMs + 1);
    });

    it('prints the record for people, with the Jaeger base from JAEGER_URL', async () => {
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', key], { JAEGER_URL: 'https://tracing.test/jaeger' });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^status\s+completed \(response 201, replayable\)$/m);
      expect(run.stdout).toMatch(/^attempt\s+1$/m);
      expect(run.stdout).toMatch(new RegExp(`^correlation ID\\s+${correlationIdFor(account, key)}$`, 'm'));
      expect(run.stdout).toMatch(new RegExp(`^trace ID\\s+${originalTraceId}$`, 'm'));
      expect(run.stdout).toMatch(new RegExp(`^Jaeger\\s+https://tracing\\.test/jaeger/trace/${originalTraceId}$`, 'm'));
    });

    it('shows an in-progress record with a lapsed lease, without a trace when none was active', async () => {
      await claim('inspect-lapsed', { leaseMs: 1 });
      await leaseLapsed(pool, records(), 'inspect-lapsed');
      const run = await cli(['inspect', ...inSchema, '--scope', 'cli', '--key', 'inspect-lapsed']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^status\s+in_progress \(lease lapsed: the next retry takes over\)$/m);
      expect(run.stdout).toMatch(/^trace ID\s+- \(no trace was active\)$/m);
    });

    it('exits 1 when no record holds the key', async () => {
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', 'never-used', '--json']);
      expect(run.code).toBe(1);
      expect(run.json.error.code).toBe('not_found');
    });
  });

  describe('partitioned tables', () => {
    const inTable = (table: string) => [...inSchema, '--table', table];

    async function relkind(table: string): Promise<string | null> {
      const { rows } = await pool.query(`SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS relkind`, [`"${schema}"."${table}"`]);
      return rows[0].relkind;
    }

    async function partitionsOf(table: string): Promise<string[]> {
      const { rows } = await pool.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass ORDER BY c.relname`,
        [`"${schema}"."${table}"`],
      );
      return rows.map((row) => row.name);
    }

    /** Start epoch seconds of the time partitions, in order. */
    async function startsOf(table: string): Promise<number[]> {
      const pattern = new RegExp(`^${table}_p(\\d+)$`);
      return (await partitionsOf(table)).flatMap((name) => (pattern.exec(name) ? [Number(pattern.exec(name)![1])] : [])).sort((a, b) => a - b);
    }

    /** A store on a partitioned table of the test schema, as the application would build it. */
    function partitionedStore(table: string, intervalSeconds: number): PostgresStore {
      return new PostgresStore({ pool, schema, table, replayCacheEntries: 0, partitioning: { intervalSeconds } });
    }

    const request = (key: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest => ({
      scope: 'cli',
      key,
      fingerprint: 'fp',
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: 30_000,
      ttlSeconds: 3600,
      ...overrides,
    });

    it('migrate --partitioned creates a partitioned table with its catch-all partition, the current one and those ahead', async () => {
      const run = await cli(['migrate', ...inTable('hourly'), '--partitioned', '--partition-interval-seconds', '3600', '--premade-partitions', '2', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        migrated: true,
        schema,
        table: 'hourly',
        partitioned: true,
        partitionIntervalSeconds: 3600,
        premadePartitions: 2,
        defaultPartition: 'hourly_default',
      });
      expect(await relkind('hourly')).toBe('p');
      const { rows } = await pool.query(
        `SELECT count(*)::int AS n FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace WHERE s.nspname = $1 AND p.proname = 'hourly_claim'`,
        [schema],
      );
      expect(rows[0].n).toBe(1);
      const hour = Math.floor(Date.now() / 3_600_000) * 3600;
      const expected = [`hourly_p${hour}`, `hourly_p${hour + 3600}`, `hourly_p${hour + 7200}`];
      // Within a second of an hour boundary the server's clock and ours may disagree about the current hour.
      if (Date.now() % 3_600_000 > 5_000) {
        expect(run.json.partitions).toEqual(expected);
        expect(await partitionsOf('hourly')).toEqual(['hourly_default', ...expected].sort());
      }

      // Run again without the interval: the table's own is kept, no partition of a day (the default) appears.
      const again = await cli(['migrate', ...inTable('hourly'), '--partitioned']);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/^partitioned by created_at: \d+ partitions of 3600 s up to \S+Z, and the catch-all "hourly_default"$/m);
      const starts = await startsOf('hourly');
      expect(starts.length).toBeGreaterThanOrEqual(3);
      for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBe(3600);
    });

    it('stats and inspect work on a partitioned table without being told', async () => {
      const store = partitionedStore('hourly', 3600);
      try {
        await store.claim(request('p-running'));
        const done = await store.claim(request('p-done'));
        if (done.kind !== 'claimed') throw new Error('expected a fresh claim');
        await store.complete(done.lease, { replayable: false, status: 204 });

        const [stats, inspect] = await Promise.all([
          cli(['stats', ...inTable('hourly'), '--json']),
          cli(['inspect', ...inTable('hourly'), '--scope', 'cli', '--key', 'p-done', '--json']),
        ]);
        expect(stats.code).toBe(0);
        expect(stats.json).toMatchObject({ totalRecords: 2, lapsedLeases: 0, oldestInProgressAgeMs: expect.any(Number) });
        expect(stats.json.byStatus.map((row: { status: string; records: number }) => [row.status, row.records])).toEqual([
          ['in_progress', 1],
          ['completed', 1],
        ]);
        expect(inspect.code).toBe(0);
        expect(inspect.json).toMatchObject({ key: 'p-done', status: 'completed', attempt: 1 });
      } finally {
        await store.close();
      }
    });

    it('refuses to migrate a partitioned table without --partitioned, and a plain one with it (exit 2)', async () => {
      expect((await cli(['migrate', ...inTable('layout_partitioned'), '--partitioned'])).code).toBe(0);
      const plain = await cli(['migrate', ...inTable('layout_partitioned'), '--json']);
      expect(plain.code).toBe(2);
      expect(plain.json.error).toEqual({
        code: 'layout_mismatch',
        message: `the table "${schema}"."layout_partitioned" is partitioned: run \`koa-idempotency migrate --partitioned\` to keep it up to date (a table is never converted; to switch to a plain table, migrate a new --table)`,
      });

      expect((await cli(['migrate', ...inTable('layout_plain')])).code).toBe(0);
      const partitioned = await cli(['migrate', ...inTable('layout_plain'), '--partitioned']);
      expect(partitioned.code).toBe(2);
      expect(partitioned.stderr).toMatch(/the table "\S+"\."layout_plain" exists and is not partitioned: `migrate --partitioned` never converts a table/);
      expect(partitioned.stdout).toBe('');
      expect([await relkind('layout_partitioned'), await relkind('layout_plain')]).toEqual(['p', 'r']);
    });

    it('refuses the partitioning flags of sweep on a plain table (exit 2)', async () => {
      expect((await cli(['migrate', ...inTable('sweep_plain')])).code).toBe(0);
      const run = await cli(['sweep', ...inTable('sweep_plain'), '--partition-interval-seconds', '60', '--json']);
      expect(run.code).toBe(2);
      expect(run.json.error).toEqual({ code: 'usage', message: expect.stringContaining('is not partitioned') });
    });

    it('sweep drops the partitions whose records all expired, taking the interval from the table', async () => {
      const migrated = await cli(['migrate', ...inTable('secondly'), '--partitioned', '--partition-interval-seconds', '1', '--premade-partitions', '5']);
      expect(migrated.code).toBe(0);
      const store = partitionedStore('secondly', 1);
      let expired: string[];
      try {
        for (let i = 0; i < 5; i++) {
          const result = await store.claim(request(`short-${i}`, { ttlSeconds: 1 }));
          if (result.kind !== 'claimed') throw new Error('expected a fresh claim');
          await store.complete(result.lease, { replayable: false, status: 204 });
        }
        const { rows } = await pool.query<{ partition: string }>(
          `SELECT DISTINCT (SELECT relname FROM pg_class WHERE oid = r.tableoid)::text AS partition FROM "${schema}".secondly r`,
        );
        expired = rows.map((row) => row.partition);
      } finally {
        await store.close();
      }
      expect(expired.length).toBeGreaterThan(0);
      expect(expired.every((name) => /^secondly_p\d+$/.test(name))).toBe(true);
      await recordsExpired(pool, `"${schema}".secondly`); // and with them their one-second partitions have ended

      const run = await cli(['sweep', ...inTable('secondly'), '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        deleted: 5,
        partitions: { intervalSeconds: 1, droppedRecords: 5, skipped: [] },
        durationMs: expect.any(Number),
      });
      for (const partition of expired) expect(run.json.partitions.dropped).toContain(partition);
      const remaining = await partitionsOf('secondly');
      for (const partition of expired) expect(remaining).not.toContain(partition);
      expect(remaining).toContain('secondly_default');
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".secondly`);
      expect(rows[0].n).toBe(0);

      // More partitions ahead than migrate made; the human output reports the maintenance after the count.
      const ahead = await cli(['sweep', ...inTable('secondly'), '--premade-partitions', '8']);
      expect(ahead.code).toBe(0);
      expect(ahead.stdout).toMatch(/^deleted 0 expired records in \d+ ms\npartitions of 1 s: [1-9]\d* created, \d+ dropped \(0 records\), 0 skipped\n$/);
      const starts = await startsOf('secondly');
      expect(starts.at(-1)! - Math.floor(Date.now() / 1_000)).toBeGreaterThanOrEqual(6);
      for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBe(1);
    });
  });

  describe('connection errors', () => {
    it('exits 3 when the server refuses the login', async () => {
      const url = new URL(DATABASE_URL);
      url.username = 'no_such_role_cli_test';
      const run = await cli(['stats', '--json'], { DATABASE_URL: url.href });
      expect(run.code).toBe(3);
      expect(run.json.error.code).toBe('login_refused');
    });

    it('exits 3 when the database does not exist', async () => {
      const url = new URL(DATABASE_URL);
      url.pathname = '/no_such_database_cli_test';
      const run = await cli(['stats'], { DATABASE_URL: url.href });
      expect(run.code).toBe(3);
      expect(run.stderr).toContain('has no such database');
    });
  });
});

describe('the koa-idempotency bin', () => {
  it('is what the build makes of src/cli/main.ts, and starts with a node shebang', () => {
    const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    const build = JSON.parse(readFileSync(new URL('../tsconfig.build.json', import.meta.url), 'utf8'));
    const { rootDir, outDir } = build.compilerOptions as { rootDir: string; outDir: string };
    expect(manifest.bin['koa-idempotency']).toBe(`${outDir}/cli/main.js`);
    expect(readFileSync(new URL(`../${rootDir}/cli/main.ts`, import.meta.url), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
    expect(manifest.files).toContain(outDir);
  });
});

describe('commandError()', () => {
  const table = { schema: 'public', table: 'idempotency_records' };

  it.each([
    [{ code: '42P01', message: 'relation does not exist' }, 'table_missing', 3],
    [{ code: '3F000', message: 'schema does not exist' }, 'table_missing', 3],
    [{ code: '57P01', message: 'terminating connection due to administrator command' }, 'unreachable', 3],
    [{ code: '08006', message: 'connection failure' }, 'unreachable', 3],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'unreachable', 3],
    [{ code: '42501', message: 'permission denied for table idempotency_records' }, 'failed', 4],
    [new Error('something else'), 'failed', 4],
  ])('classifies %j as %s (exit %i)', (error, code, exitCode) => {
    const failure = commandError(error, table);
    expect(failure.code).toBe(code);
    expect(failure.exitCode).toBe(exitCode);
  });

  it('keeps the SQLSTATE in the message of an unexpected SQL error', () => {
    expect(commandError(Object.assign(new Error('permission denied'), { code: '42501' }), table).message).toBe('permission denied (SQLSTATE 42501)');
  });
});
