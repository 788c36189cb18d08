import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FINGERPRINT_VERSION, type ClaimRequest } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { ATTR, correlationIdFor, EVENT } from '../../src/entries/otel.js';
import { keyHash } from '../../src/telemetry/correlation.js';
import { until, terminate } from '../helpers/child-processes.js';
import { DATABASE_URL, uniqueSchema } from '../helpers/databases.js';
import { exampleEnvironment } from '../helpers/example-environment.js';
import { EXAMPLE_START_TIMEOUT_MS } from '../jaeger-support/example.js';

/**
 * `koa-idempotency forget` (and `inspect --instance`), run as an operator runs them: the CLI as a child process
 * against a real Postgres server, and against `npm start`'s own server from a "second terminal".
 */
const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { env: { ...process.env, DATABASE_URL, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') {
        const failure: Error = error; // the CLI did not run (spawn failed or timed out): not an exit code
        return reject(failure);
      }
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr, json });
    });
  });
}

describe('koa-idempotency forget on the Postgres server', () => {
  const schema = uniqueSchema('cli_forget');
  const inSchema = ['--schema', schema];
  let pool: pg.Pool;
  let store: PostgresStore;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 5 });
    store = new PostgresStore({ pool, schema });
    await store.migrate();
  });
  afterAll(async () => {
    await store?.close();
    await pool?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool?.end();
  });

  const claim = (key: string, overrides: Partial<ClaimRequest> = {}) =>
    store.claim({
      scope: 'ops',
      key,
      fingerprint: 'fp',
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: 30_000,
      ttlSeconds: 3600,
      correlationId: correlationIdFor('ops', key),
      ...overrides,
    });

  async function completed(key: string): Promise<void> {
    const result = await claim(key);
    if (result.kind !== 'claimed') throw new Error('expected a fresh claim');
    await store.complete(result.lease, { replayable: true, response: { status: 201, headers: {}, body: Buffer.from('{"ok":true}') } });
  }

  /** An in-progress record whose owner's lease has lapsed (as after a crash): waits until the store says so. */
  async function lapsed(key: string): Promise<void> {
    await claim(key, { leaseMs: 1 });
    await until(
      async () => (await store.find('ops', key))?.leaseRemainingMs === 0,
      5_000,
      () => `${key}: the lease did not lapse`,
    );
  }

  it('deletes a completed record, prints what it removed, and leaves an audit line on stderr without the key', async () => {
    await completed('support-1');
    const run = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'support-1', '--json']);
    expect(run.code).toBe(0);
    expect(run.json).toMatchObject({ forgotten: true, scope: 'ops', key: 'support-1', status: 'completed', responseStatus: 201, attempt: 1 });
    expect(run.json.correlationId).toBe(correlationIdFor('ops', 'support-1'));
    expect(run.stderr).toMatch(/^koa-idempotency at=\S+ audit=forget user=\S+ host=\S+ correlation_id=[0-9a-f]{32} key_hash=[0-9a-f]{32} status=completed attempt=1\n$/);
    expect(run.stderr).toContain(`key_hash=${keyHash('support-1')}`);
    expect(run.stderr).not.toContain('support-1');
    expect(await store.find('ops', 'support-1')).toBeUndefined();
  });

  it('prints the removed record for people', async () => {
    await completed('support-2');
    const run = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'support-2']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^was\s+completed \(response 201\)$/m);
    expect(run.stdout).toMatch(/^next request\s+runs the operation again$/m);
  });

  it('refuses a record whose handler is running (exit 5), even with --force, and keeps it', async () => {
    await claim('running');
    for (const force of [[], ['--force']]) {
      const run = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'running', ...force, '--json']);
      expect(run.code).toBe(5);
      expect(run.json.error.code).toBe('in_progress');
      expect(run.json.error.message).toContain('its handler is running');
    }
    expect((await store.find('ops', 'running'))?.status).toBe('in_progress');
  });

  it('refuses an in-progress record whose lease lapsed unless --force is given, then deletes it', async () => {
    await lapsed('crashed');
    const refused = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'crashed', '--json']);
    expect(refused.code).toBe(5);
    expect(refused.json.error.message).toContain('add --force');
    const forced = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'crashed', '--force', '--json']);
    expect(forced.code).toBe(0);
    expect(forced.json.status).toBe('in_progress');
    expect(await store.find('ops', 'crashed')).toBeUndefined();
  });

  it('exits 1 when no record holds the key, and 2 without --key', async () => {
    const missing = await cli(['forget', ...inSchema, '--scope', 'ops', '--key', 'never-used', '--json']);
    expect([missing.code, missing.json.error.code]).toEqual([1, 'not_found']);
    const usage = await cli(['forget', ...inSchema, '--scope', 'ops', '--json']);
    expect([usage.code, usage.json.error.code]).toEqual([2, 'usage']);
  });

  it('adds an idempotency.forget event with the correlation ID to the active span where an SDK runs', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    trace.setGlobalTracerProvider(provider);
    try {
      await completed('support-3');
      await trace.getTracer('ops').startActiveSpan('admin forget', async (span) => {
        expect((await store.forget('ops', 'support-3')).kind).toBe('forgotten');
        span.end();
      });
      const [span] = exporter.getFinishedSpans();
      const event = span!.events.find((candidate) => candidate.name === EVENT.FORGET);
      expect(event?.attributes).toMatchObject({ [ATTR.CORRELATION_ID]: correlationIdFor('ops', 'support-3'), [ATTR.RECORD_STATUS]: 'completed' });
      expect(JSON.stringify(event)).not.toContain('support-3');
    } finally {
      trace.disable();
      context.disable();
      await provider.shutdown();
    }
  });
});

describe('koa-idempotency forget against npm start from a second terminal', () => {
  let stop: () => Promise<void> = async () => undefined;
  let output = '';
  let baseUrl = '';
  let databaseUrl = '';

  beforeAll(async () => {
    const { env, ports } = await exampleEnvironment();
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/payments/start.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    stop = () => terminate(child, 15_000);
    await until(
      async () => output.includes('payments API listening') || child.exitCode !== null,
      EXAMPLE_START_TIMEOUT_MS,
      () => `npm start did not start:\n${output}`,
    );
    // What the example prints for the operator's second terminal.
    databaseUrl = /^DATABASE_URL=(\S+)$/m.exec(output)?.[1] ?? '';
    baseUrl = `http://127.0.0.1:${ports.payments}`;
  }, EXAMPLE_START_TIMEOUT_MS + 10_000);
  afterAll(() => stop(), 30_000);

  const pay = (key: string) =>
    fetch(`${baseUrl}/payments`, {
      method: 'POST',
      headers: { authorization: 'Bearer acct_support', 'idempotency-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ amount: 1250, currency: 'EUR' }),
    }).then(async (response) => ({ status: response.status, replayed: response.headers.get('idempotent-replayed') === 'true', body: await response.text() }));

  it("finds the record a client's 422 concerned from the problem's instance alone (inspect --instance)", async () => {
    const key = 'support-case-2';
    expect((await pay(key)).status).toBe(201);
    const reused = await fetch(`${baseUrl}/payments`, {
      method: 'POST',
      headers: { authorization: 'Bearer acct_support', 'idempotency-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ amount: 9999, currency: 'EUR' }),
    });
    const problem = (await reused.json()) as { instance: string; status: number };
    expect(problem.status).toBe(422);
    const run = await cli(['inspect', '--instance', problem.instance, '--json'], { DATABASE_URL: databaseUrl });
    expect(run.code, run.stderr).toBe(0);
    expect(run.json).toMatchObject({ scope: 'acct_support', key, status: 'completed', correlationId: correlationIdFor('acct_support', key) });
    const plain = await cli(['inspect', '--instance', `urn:uuid:${crypto.randomUUID()}`, '--json'], { DATABASE_URL: databaseUrl });
    expect([plain.code, plain.json.error.code]).toEqual([2, 'usage']);
  });

  it('runs a forgotten key again on its next request, though the server had its replay cached', async () => {
    expect(databaseUrl, output).toMatch(/^postgres(ql)?:\/\//);
    const first = await pay('support-case-1');
    expect(first).toMatchObject({ status: 201, replayed: false });
    // Two replays: the second is answered from the server's replay cache, with no SQL.
    for (let i = 0; i < 3; i++) expect(await pay('support-case-1')).toMatchObject({ status: 201, replayed: true, body: first.body });

    const run = await cli(['forget', '--scope', 'acct_support', '--key', 'support-case-1', '--json'], { DATABASE_URL: databaseUrl });
    expect(run.code, run.stderr).toBe(0);
    expect(run.json).toMatchObject({ forgotten: true, status: 'completed', responseStatus: 201 });

    // The NOTIFY reaches the server's listening session a moment after the CLI's commit: wait for its effect.
    let again: Awaited<ReturnType<typeof pay>> | undefined;
    await until(
      async () => !(again = await pay('support-case-1')).replayed,
      10_000,
      () => 'the forget to reach the server: its retries are still replays',
    );
    expect(again).toMatchObject({ status: 201, replayed: false });
    expect(again!.body).not.toBe(first.body);
    const inspected = await cli(['inspect', '--scope', 'acct_support', '--key', 'support-case-1', '--json'], { DATABASE_URL: databaseUrl });
    expect(inspected.json).toMatchObject({ status: 'completed', attempt: 1 });
  });
});
