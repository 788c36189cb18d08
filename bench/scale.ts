import { createHash, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import pg from 'pg';
import { PostgresStore, type ClaimRequest } from '../src/index.js';
import { benchSchemaSql } from './app.js';
import { describeEnvironment } from './environment.js';
import { ensureFilled } from './fill.js';
import { runLoad } from './load.js';
import { SCENARIOS } from './scenarios.js';
import { ServerProcess } from './servers.js';
import { percentile, round } from './stats.js';

/**
 * `npm run bench:scale [-- --rows=10000000]`: does the cost stay flat as the table grows?
 * 1. Claim and replay latency on a table of 10 thousand records vs one of `--rows` (10 million by
 *    default), measured with direct store calls (replay cache off, so every replay reads the table),
 *    interleaved small / large over several rounds.
 * 2. Sweeping 1 million expired records while HTTP traffic runs: claim p99 before, during and after,
 *    once with `store.sweep()` (batches back to back) and once paced (a pause after every batch).
 * The filled tables are kept and reused by the next run (the sweep's table is refilled each time).
 */
const largeRows = Number(process.argv.find((arg) => arg.startsWith('--rows='))?.slice('--rows='.length) ?? 10_000_000);
const SMALL_ROWS = 10_000;
const EXPIRED_ROWS = 1_000_000;
const ROUNDS = 5;
const CALLS_PER_ROUND = 1_000;
/** The paced sweep: one batch of 1,000 rows, then this pause, as an application's own sweep loop can do. */
const PACED_SWEEP_PAUSE_MS = 50;
const databaseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const pool = new pg.Pool({ connectionString: databaseUrl, max: 6 });
const environment = await describeEnvironment(pool);
try {
  await ensureFilled(pool, { schema: 'bench_scale_small', completedRows: SMALL_ROWS, expiredRows: 0 }, log);
  await ensureFilled(pool, { schema: 'bench_scale_large', completedRows: largeRows, expiredRows: 0 }, log);
  const growth = await measureGrowth();
  const sweep = await measureSweepUnderTraffic(0);
  const pacedSweep = await measureSweepUnderTraffic(PACED_SWEEP_PAUSE_MS);
  environment.loadAverageAtEnd = os.loadavg()[0]!;
  const result = { environment, largeRows, smallRows: SMALL_ROWS, growth, sweep, pacedSweep };
  await mkdir(new URL('./results/', import.meta.url), { recursive: true });
  await writeFile(new URL('./results/scale.json', import.meta.url), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify({ growth, sweep, pacedSweep }, null, 2));
} finally {
  await pool.end();
}

/** A claim of a fresh random key (inserts a record) and a replay of a random completed fill key. */
function claimRequest(key: string): ClaimRequest {
  return { scope: '', key, fingerprint: 'fill', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 86_400 };
}

function fillKey(rows: number): string {
  const n = 1 + Math.floor(Math.random() * rows);
  return md5Uuid(`fill-${n}`);
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
  return { ...result, ratios: { claimP50: ratio('claim', 'p50Ms'), claimP99: ratio('claim', 'p99Ms'), replayP50: ratio('replay', 'p50Ms'), replayP99: ratio('replay', 'p99Ms') } };
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
      httpP99Ms: round(percentile(http, 0.99)),
      rps: round(rps / windows, 0),
    };
  };
  try {
    await window(() => true); // warm-up
    const before = await window(() => true);
    let sweeping = true;
    const sweepStarted = performance.now();
    const deletion = (pauseMs === 0 ? sweeper.sweep() : pacedSweep(sweeper, pauseMs)).finally(() => (sweeping = false));
    const during = await window(() => !sweeping);
    const deleted = await deletion;
    const sweepSeconds = round((performance.now() - sweepStarted) / 1000, 1);
    const after = await window(() => true);
    log(`swept ${deleted} rows in ${sweepSeconds} s (pause between batches: ${pauseMs} ms)`);
    return { pauseMs, deleted, sweepSeconds, before, during, after, claimP99Ratio: round(during.claimP99Ms / before.claimP99Ms) };
  } finally {
    await Promise.all([probeStore.close(), sweeper.close(), server.stop()]);
  }
}

async function pacedSweep(store: PostgresStore, pauseMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await store.sweep({ maxBatches: 1 });
    total += deleted;
    if (deleted === 0) return total;
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
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
