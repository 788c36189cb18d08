import type { AddressInfo } from 'node:net';
import { countRoundTrips, roundTripsSoFar } from './round-trips.js';
import type { ServerKind } from './app.js';
import { BackendCpu } from './cpu.js';

/**
 * One benchmarked server, run as a child process by run.ts (IPC channel required).
 * Environment: BENCH_SERVER (baseline | lease | transactional | naive), BENCH_SCHEMA (already created
 * and migrated by the runner), BENCH_TELEMETRY=1 for the OpenTelemetry SDK, BENCH_PARTITIONED=1 for a partitioned records table, DATABASE_URL, BENCH_POOL_MAX,
 * BENCH_PIPELINE=0 for pools that do not pipeline.
 * It answers the runner's { type: 'stats' } message with its round trips, requests, peak RSS and CPU time.
 */
const kind = process.env.BENCH_SERVER as ServerKind;
const schema = process.env.BENCH_SCHEMA!;
if (!process.send) throw new Error('bench/server.ts runs as a child of bench/run.ts (it needs an IPC channel)');

// The SDK must patch `http` before Koa loads it, hence the dynamic imports below.
if (process.env.BENCH_TELEMETRY === '1') await (await import('./telemetry.js')).startTelemetry();
countRoundTrips();
const { default: pg } = await import('pg');
const { builtEntry } = await import('./library.js');
const { PostgresStore } = await builtEntry('entries/postgres.js');
const { idempotency } = await builtEntry('index.js');
const { createBenchApp } = await import('./app.js');

// Idle connections stay open: a server waits idle while the other scenarios run, and reconnecting
// at the start of each round would be measured as part of that round. Every scenario's pool pipelines, as
// the README recommends for transactional mode: code that awaits each query (the baseline, the hand-written
// reference, lease mode) sends them one after the other all the same. BENCH_PIPELINE=0 turns it off.
const pool = new pg.Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.BENCH_POOL_MAX ?? 10),
  idleTimeoutMillis: 0,
  pipeline: process.env.BENCH_PIPELINE !== '0',
});
const backendCpu = new BackendCpu(pool);
const replayCacheEntries = process.env.BENCH_REPLAY_CACHE_ENTRIES;
const store = new PostgresStore({
  pool,
  schema,
  partitioning: process.env.BENCH_PARTITIONED === '1',
  ...(replayCacheEntries === undefined ? {} : { replayCacheEntries: Number(replayCacheEntries) }),
});
const server = createBenchApp(kind, pool, store, schema, idempotency).listen(0, '127.0.0.1');
let requests = 0;
server.on('request', () => requests++);
server.keepAliveTimeout = 60_000;

server.once('listening', () => {
  process.send!({ type: 'ready', port: (server.address() as AddressInfo).port });
});

process.on('message', (message: { type: string }) => {
  if (message.type === 'stats') {
    const { user, system } = process.cpuUsage();
    process.send!({
      type: 'stats',
      roundTrips: roundTripsSoFar(),
      requests,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      serverCpuMs: (user + system) / 1000,
      databaseCpuMs: backendCpu.totalMs(),
    });
  }
});

process.on('disconnect', () => {
  server.closeAllConnections();
  server.close();
  void store
    .close()
    .finally(() => pool.end())
    .finally(() => process.exit(0));
});
