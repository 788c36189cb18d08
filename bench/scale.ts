import { setTimeout as sleep } from 'node:timers/promises';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import pg from 'pg';
import { type ClaimRequest } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { benchSchemaSql } from './app.js';
import { describeEnvironment } from './environment.js';
import { ensureFilled, fillRowsSql } from './fill.js';
import { runLoad } from './load.js';
import { SCENARIOS } from './scenarios.js';
import { buildLibrary } from './library.js';
import { ServerProcess } from './servers.js';
import { percentile, round } from './stats.js';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';

/**
 * `npm run bench:scale [-- --rows=10000000]`: does the cost stay flat as the table grows?
 * 1. Claim and replay latency on a table of 10 thousand records vs one of `--rows` (10 million by
 *    default), measured with direct store calls (replay cache off, so every replay reads the table),
 *    interleaved small / large over several rounds; then again with both tables prewarmed into the
 *    page cache (pg_prewarm), when the extension can be created.
 * 2. Sweeping 1 million expired records while HTTP traffic runs: claim p99 before, during and after,
 *    once with `store.sweep({ pauseMs: 0 })` (batches back to back) and once paced (a pause after every batch,
 *    what the default `sweepPauseMs` does).
 * 3. The same expiry on a table partitioned by time: the expired records' partition is dropped.
 * `--only=partitions` runs step 3 alone.
 * The filled tables are kept and reused by the next run on the same server (DATABASE_URL); a server started for
 * the run (no DATABASE_URL) is removed with it, so each such run fills them again. The sweep's table is refilled each time.
 */
const largeRows = Number(process.argv.find((arg) => arg.startsWith('--rows='))?.slice('--rows='.length) ?? 10_000_000);
const SMALL_ROWS = 10_000;
const EXPIRED_ROWS = 1_000_000;
const ROUNDS = 5;
const CALLS_PER_ROUND = 1_000;
/** The paced sweep: one batch of 1,000 rows, then this pause, as an application's own sweep loop can do. */
const PACED_SWEEP_PAUSE_MS = 50;
buildLibrary();
// The server at DATABASE_URL, or a real one started for this run (durable, as a production server is).
const postgres = await serverFromEnvironment();
const databaseUrl = postgres.url;

const pool = new pg.Pool({ connectionString: databaseUrl, max: 6 });
// pool.end() resolves before its connections have closed: the server stopping at the end of the run may still end one.
pool.on('error', () => undefined);
const environment = await describeEnvironment(pool);
const resultsFile = new URL('./results/scale.json', import.meta.url);
try {
  if (process.argv.includes('--only=partitions')) {
    // Refreshes one part of the last full run's results.
    const previous = JSON.parse(await readFile(resultsFile, 'utf8').catch(() => '{}')) as Record<string, unknown>;
    const partitionDrop = await measurePartitionDropUnderTraffic();
    await writeFile(resultsFile, `${JSON.stringify({ ...previous, partitionDrop, partitionDropEnvironment: environment }, null, 2)}\n`);
    console.log(JSON.stringify({ partitionDrop }, null, 2));
  } else {
    await ensureFilled(pool, { schema: 'bench_scale_small', completedRows: SMALL_ROWS, expiredRows: 0 }, log);
    await ensureFilled(pool, { schema: 'bench_scale_large', completedRows: largeRows, expiredRows: 0 }, log);
    const growth = await measureGrowth();
    // The same with both tables read into the operating system's page cache first: whether the large
    // table's pages come from memory or from disk decides its lookups' cost, not the row count.
    const growthPrewarmed = (await prewarm(['bench_scale_small', 'bench_scale_large'])) ? await measureGrowth() : undefined;
    const sweep = await measureSweepUnderTraffic(0);
    const pacedSweep = await measureSweepUnderTraffic(PACED_SWEEP_PAUSE_MS);
    const partitionDrop = await measurePartitionDropUnderTraffic();
    environment.loadAverageAtEnd = os.loadavg()[0]!;
    const result = { environment, largeRows, smallRows: SMALL_ROWS, growth, growthPrewarmed, sweep, pacedSweep, partitionDrop };
    await mkdir(new URL('./results/', import.meta.url), { recursive: true });
    await writeFile(resultsFile, `${JSON.stringify(result, null, 2)}\n`);
    console.log(JSON.stringify({ growth, growthPrewarmed, sweep, pacedSweep, partitionDrop }, null, 2));
  }
} finally {
  await pool.end();
  await postgres.stop();
}

/** A claim of a fresh random key (inserts a record) and a replay of a random completed fill key. */
function claimRequest(key: string): ClaimRequest {
  return { scope: '', key, fingerprint: 'fill', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 86_400 };
}

function fillKey(rows: number): string {
  const n = 1 + Math.floor(Math.random() * rows);
  return md5Uuid(`fill-${n}`);
}

/** Reads the records tables and their indexes into the OS page cache with pg_prewarm; false when it is not installed. */
async function prewarm(schemas: string[]): Promise<boolean> {
  try {
    await pool.query('CREATE EXTENSION IF NOT EXISTS pg_prewarm');
    for (const schema of schemas) {
      await pool.query(`SELECT pg_prewarm($1, 'read'), pg_prewarm($2, 'read')`, [`"${schema}".idempotency_records`, `"${schema}".idempotency_records_pkey`]);
    }
    log('prewarmed the growth tables into the page cache');
    return true;
  } catch (error) {
    log(`no prewarmed growth measurement: ${(error as Error).message}`);
    return false;
  }
}

async function measureGrowth() {
  const tables = [
    { name: 'small', rows: SMALL_ROWS, store: new PostgresStore({ pool, schema: 'bench_scale_small', replayCacheEntries: 0 }) },
    { name: 'large', rows: largeRows, store: new PostgresStore({ pool, schema: 'bench_scale_large', replayCacheEntries: 0 }) },
  ];
  const latencies = new Map<string, number[]>();
  const time = async (label: string, run: () => Promise<unknown>) => {
    const started = performance.now();
    await run();
    const list = latencies.get(label) ?? [];
    list.push(performance.now() - started);
    latencies.set(label, list);
  };
  try {
    for (let round = 0; round <= ROUNDS; round++) {
      for (const table of tables) {
        for (let call = 0; call < CALLS_PER_ROUND; call++) {
          await time(`${table.name} claim`, () => table.store.claim(claimRequest(randomUUID())));
          const replay = await (async () => {
            let kind = '';
            await time(`${table.name} replay`, async () => (kind = (await table.store.claim(claimRequest(fillKey(table.rows)))).kind));
            return kind;
          })();
          if (replay !== 'existing') throw new Error(`a replay of a fill key was ${replay}, not existing`);
        }
        if (round === 0) latencies.clear(); // round 0 warms the caches and prepares the statements
      }
      if (round > 0) log(`growth round ${round}/${ROUNDS}`);
    }
  } finally {
    await Promise.all(tables.map((table) => table.store.close()));
  }
  const summary = (label: string) => {
    const sorted = latencies.get(label)!.sort((a, b) => a - b);
    return { p50Ms: round(percentile(sorted, 0.5), 3), p99Ms: round(percentile(sorted, 0.99), 3), calls: sorted.length };
  };
  const result: Record<string, { p50Ms: number; p99Ms: number; calls: number }> = {};
  for (const label of latencies.keys()) result[label] = summary(label);
  const ratio = (op: string, q: 'p50Ms' | 'p99Ms') => round(result[`large ${op}`]![q] / result[`small ${op}`]![q]);
  return {
    ...result,
    ratios: { claimP50: ratio('claim', 'p50Ms'), claimP99: ratio('claim', 'p99Ms'), replayP50: ratio('replay', 'p50Ms'), replayP99: ratio('replay', 'p99Ms') },
  };
}

/**
 * Lease-mode HTTP traffic on a table holding 1 million expired records, plus a probe that claims
 * fresh keys one after another: claim p99 in a window before the sweep, while it runs, and after.
 * `pauseMs` 0 runs `store.sweep()` (batches back to back); otherwise one batch per call, with a pause.
 */
async function measureSweepUnderTraffic(pauseMs: number) {
  const schema = 'bench_scale_sweep';
  await ensureFilled(pool, { schema, completedRows: 100_000, expiredRows: EXPIRED_ROWS }, log);
  await pool.query(`DROP TABLE "${schema}".bench_fill`); // the sweep empties it: refill next time
  await pool.query(benchSchemaSql(schema));
  const server = await ServerProcess.start({ kind: 'lease', schema }, databaseUrl);
  const probeStore = new PostgresStore({ pool, schema });
  const sweeper = new PostgresStore({ pool, schema });
  try {
    const measured = await underTraffic(server, probeStore, () => (pauseMs === 0 ? sweeper.sweep({ pauseMs: 0 }) : pacedSweep(sweeper, pauseMs)));
    log(`swept ${measured.result} rows in ${measured.seconds} s (pause between batches: ${pauseMs} ms)`);
    return { pauseMs, deleted: measured.result, sweepSeconds: measured.seconds, ...measured.windows };
  } finally {
    await Promise.all([probeStore.close(), sweeper.close(), server.stop()]);
  }
}

/**
 * The same 1 million expired records and 100 thousand live ones in a table partitioned by day
 * (`partitioning: true`): the expired ones fill a partition of two days ago, which `sweep()` drops.
 */
async function measurePartitionDropUnderTraffic() {
  const schema = 'bench_scale_partitions';
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.query(benchSchemaSql(schema));
  const sweeper = new PostgresStore({ pool, schema, partitioning: true });
  await sweeper.migrate();
  const table = `"${schema}".idempotency_records`;
  const { rows } = await pool.query<{ start: string }>(`SELECT (floor(extract(epoch FROM now()) / 86400) * 86400 - 2 * 86400)::bigint::text AS start`);
  const start = Number(rows[0]!.start);
  await pool.query(`CREATE TABLE "${schema}".idempotency_records_p${start} PARTITION OF ${table}
    FOR VALUES FROM (to_timestamp(${start})) TO (to_timestamp(${start + 86_400}))`);
  const fill = (from: number, to: number, createdAt: string, expiresAt: string) => pool.query(fillRowsSql(table, { from, to, createdAt, expiresAt }));
  const filling = performance.now();
  for (let from = 1; from <= EXPIRED_ROWS; from += 250_000) {
    await fill(from, from + 249_999, `to_timestamp(${start} + 3600)`, `now() - interval '1 minute'`);
  }
  await fill(EXPIRED_ROWS + 1, EXPIRED_ROWS + 100_000, `now() - interval '1 minute'`, `now() + interval '1 day'`);
  await pool.query(`SELECT setval('"${schema}".idempotency_records_fence_seq', ${EXPIRED_ROWS + 100_001})`);
  await pool.query(`VACUUM ANALYZE ${table}`);
  log(`${schema}: filled ${EXPIRED_ROWS} expired + 100000 live rows in ${Math.round((performance.now() - filling) / 1000)} s`);

  const server = await ServerProcess.start({ kind: 'lease', schema, partitioned: true }, databaseUrl);
  const probeStore = new PostgresStore({ pool, schema, partitioning: true });
  try {
    const measured = await underTraffic(server, probeStore, () => sweeper.maintainPartitions());
    log(`partition maintenance: dropped ${measured.result.dropped.join(', ')} (${measured.result.droppedRecords} records) in ${measured.seconds} s`);
    return { dropped: measured.result.droppedRecords, skipped: measured.result.skipped, sweepSeconds: measured.seconds, ...measured.windows };
  } finally {
    await Promise.all([probeStore.close(), sweeper.close(), server.stop()]);
  }
}

/**
 * Lease-mode HTTP traffic plus a probe that claims fresh keys one after another, in 3-second windows:
 * before `expire` starts, while it runs (at least one window), and after. Claim p99 is the probe's.
 */
async function underTraffic<T>(server: ServerProcess, probeStore: PostgresStore, expire: () => Promise<T>) {
  const request = SCENARIOS.find((scenario) => scenario.name === 'lease')!.request;
  const window = async (done: () => boolean) => {
    const probe: number[] = [];
    const http: number[] = [];
    let rps = 0;
    let windows = 0;
    do {
      const loading = runLoad({ url: server.url, connections: 4, durationSeconds: 3, request });
      const deadline = performance.now() + 3_000;
      while (performance.now() < deadline) {
        const started = performance.now();
        await probeStore.claim(claimRequest(randomUUID()));
        probe.push(performance.now() - started);
      }
      const result = await loading;
      http.push(...result.latenciesMs);
      rps += result.rps;
      windows++;
    } while (!done());
    probe.sort((a, b) => a - b);
    http.sort((a, b) => a - b);
    return {
      claimP50Ms: round(percentile(probe, 0.5), 3),
      claimP99Ms: round(percentile(probe, 0.99), 3),
      claimMaxMs: round(probe.at(-1)!, 3),
      httpP99Ms: round(percentile(http, 0.99)),
      rps: round(rps / windows, 0),
    };
  };
  await window(() => true); // warm-up
  const before = await window(() => true);
  let running = true;
  const started = performance.now();
  let ended = started;
  const expiring = expire().finally(() => {
    running = false;
    ended = performance.now();
  });
  const during = await window(() => !running);
  const result = await expiring;
  const seconds = round((ended - started) / 1000, 2);
  const after = await window(() => true);
  return { result, seconds, windows: { before, during, after, claimP99Ratio: round(during.claimP99Ms / before.claimP99Ms) } };
}

async function pacedSweep(store: PostgresStore, pauseMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await store.sweep({ maxBatches: 1 });
    total += deleted;
    if (deleted === 0) return total;
    await sleep(pauseMs);
  }
}

/** The key of a fill row as fill.ts writes it: md5('fill-' || n)::uuid::text. */
function md5Uuid(text: string): string {
  const hex = createHash('md5').update(text).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function log(message: string): void {
  console.log(`[bench:scale] ${message}`);
}
