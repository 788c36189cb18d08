import http from 'node:http';
import type { HeapProfiler } from 'node:inspector';
import { Session } from 'node:inspector/promises';
import pg from 'pg';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';
import { benchSchemaSql, createBenchApp, type ServerKind } from './app.js';
import { buildLibrary, builtEntry } from './library.js';

/**
 * `npm run bench:allocations`: the bytes of JavaScript heap each scenario allocates per request, garbage
 * included, where they are allocated, from V8's sampling heap profiler told to keep the objects the collector
 * has freed since. Unlike time, allocation does not move with a busy host: it is the measure to cut CPU by
 * where the throughput of a shared machine cannot tell 5 % apart. Every server runs in this process with its
 * HTTP client (the client's part is the same for all); `REQUESTS` requests per scenario, `CONCURRENCY` at a
 * time, after as many to warm up. `--sites` also lists the busiest allocation sites of each scenario.
 */
const REQUESTS = 2_000;
const CONCURRENCY = 8;
const SAMPLING_INTERVAL_BYTES = 512;
const KINDS: ServerKind[] = ['baseline', 'transactional', 'handwritten', 'lease', 'handwrittenLease'];

buildLibrary();
const { idempotency } = await builtEntry('index.js');
const { PostgresStore } = await builtEntry('entries/postgres.js');
const postgres = await serverFromEnvironment();
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
const run = Date.now().toString(36);
const body = JSON.stringify({ amount: 100 });
try {
  for (const kind of KINDS) {
    const schema = `bench_allocations_${kind.toLowerCase()}`;
    const pool = new pg.Pool({ connectionString: postgres.url, max: 10, idleTimeoutMillis: 0, pipeline: true });
    // pool.end() resolves before its connections have closed: the server stopping next may still end one.
    pool.on('error', () => undefined);
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.query(benchSchemaSql(schema));
    const store = new PostgresStore({ pool, schema });
    await store.migrate();
    const server = createBenchApp(kind, pool, store, schema, idempotency).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const send = sender((server.address() as { port: number }).port, agent);
    try {
      await load(send, `${run}-${kind}-warm`);
      await session.post('HeapProfiler.startSampling', {
        samplingInterval: SAMPLING_INTERVAL_BYTES,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: true,
      });
      await load(send, `${run}-${kind}`);
      const { profile } = await session.post('HeapProfiler.stopSampling');
      report(kind, profile.head);
    } finally {
      agent.destroy();
      server.close();
      await store.close();
      await pool.end();
    }
  }
} finally {
  session.disconnect();
  await postgres.stop();
}

/** A POST /orders with a fresh key, resolved when its response has been read (rejected on any status but 201). */
function sender(port: number, agent: http.Agent) {
  return (key: string) =>
    new Promise<void>((resolve, reject) => {
      const headers = { 'content-type': 'application/json', 'idempotency-key': key, 'content-length': Buffer.byteLength(body) };
      const request = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/orders', agent, headers }, (response) => {
        if (response.statusCode !== 201) reject(new Error(`${key}: status ${response.statusCode}`));
        response.resume().on('end', resolve);
      });
      request.on('error', reject).end(body);
    });
}

async function load(send: (key: string) => Promise<void>, prefix: string): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) await send(`${prefix}-${next++}`);
    }),
  );
}

/** Bytes per request, in total and by where they were allocated: node-postgres, the library, Node, the rest. */
function report(kind: ServerKind, head: HeapProfiler.SamplingHeapProfileNode): void {
  const bySite = new Map<string, number>();
  const visit = (node: HeapProfiler.SamplingHeapProfileNode) => {
    if (node.selfSize > 0) {
      const { functionName, url, lineNumber } = node.callFrame;
      const site = `${functionName || '(anonymous)'} ${url.replace(/^(?:file:\/\/)?.*?\/(node_modules|dist|bench)\//, '$1/')}:${lineNumber + 1}`;
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    }
    node.children.forEach(visit);
  };
  visit(head);
  const byPart = new Map<string, number>();
  for (const [site, bytes] of bySite) {
    const part = partOf(site);
    byPart.set(part, (byPart.get(part) ?? 0) + bytes);
  }
  const total = [...bySite.values()].reduce((sum, bytes) => sum + bytes, 0);
  const parts = [...byPart].sort((a, b) => b[1] - a[1]).map(([part, bytes]) => `${part} ${kilobytes(bytes)}`);
  console.log(`${kind}: ${kilobytes(total)} KB per request (${parts.join(', ')})`);
  if (!process.argv.includes('--sites')) return;
  for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${String(Math.round(bytes / REQUESTS)).padStart(6)} B  ${site}`);
}

function partOf(site: string): string {
  if (/ node_modules\/(pg|pg-protocol|pg-pool)\//.test(site)) return 'node-postgres';
  if (/ dist\//.test(site)) return 'koa-idempotency';
  if (/ node:|^\S+ :/.test(site)) return 'Node';
  return 'other';
}

function kilobytes(bytes: number): string {
  return (bytes / REQUESTS / 1024).toFixed(1);
}
