import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUntracedClient, gate, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from './telemetry-harness.js';
import { IdempotencyConfigError, PROBLEMS, problemType, type IdempotencyOptions, type ProblemName } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { ATTR, correlationIdFor } from '../src/entries/otel.js';
import { correlationTag, correlationTagOf } from '../src/problem-instance.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';

/**
 * The problem body as a client and a support engineer use it, through HTTP: every problem's `instance` is a
 * fresh `urn:uuid:` occurrence ID that is also on the request's span; `retryable` says whether a retry with
 * the same key can succeed; the raw key only where the application opted in; replay marker aliases.
 */
const telemetry = startTestTelemetry();
const { createTestApp } = await import('./helpers/app.js');
const { serve } = await import('./helpers/http.js');

const target = POSTGRES_SERVER;
const URN_UUID = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[48][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
let keySeq = 0;
const newKey = (label: string) => `contract-${label}-${Date.now()}-${++keySeq}`;

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  traceId: string;
}

describe(`problem details on ${target.name}`, () => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('problem_contract');
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await db?.close();
  });

  async function start(options: Partial<IdempotencyOptions> = {}, respond?: Parameters<typeof createTestApp>[0]['respond'], store?: PostgresStore) {
    const { app, executions } = createTestApp({ store: store ?? (await db.store()), options, respond });
    const server = await serve(app);
    servers.push(server);
    return { url: server.url, executions };
  }

  async function send(url: string, init: { key?: string; body?: string; contentType?: string; account?: string; method?: string }): Promise<Answer> {
    const trace = newTrace();
    return asUntracedClient(async () => {
      const headers: Record<string, string> = { 'content-type': init.contentType ?? 'application/json', 'x-account': init.account ?? 'acct_contract', ...trace.headers };
      if (init.key !== undefined) headers['idempotency-key'] = init.key;
      const response = await fetch(`${url}/orders`, { method: init.method ?? 'POST', headers, body: init.body ?? '{"amount":1}' });
      const text = await response.text();
      const body = response.headers.get('content-type')?.includes('json') ? (JSON.parse(text) as Record<string, unknown>) : { text };
      return { status: response.status, headers: response.headers, body, traceId: trace.traceId };
    });
  }

  function expectProblem(answer: Answer, name: ProblemName) {
    expect(answer.status).toBe(PROBLEMS[name].status);
    expect(answer.headers.get('content-type')).toBe('application/problem+json');
    expect(answer.body.type).toBe(problemType(name));
    expect(answer.body.instance).toMatch(URN_UUID);
    expect(answer.body.retryable).toBe(PROBLEMS[name].retryable);
  }

  describe('instance', () => {
    it('is a fresh urn:uuid occurrence ID per problem, not the path', async () => {
      const { url } = await start({ required: true });
      const answers = await Promise.all([send(url, {}), send(url, {}), send(url, {})]);
      for (const answer of answers) expectProblem(answer, 'keyMissing');
      expect(new Set(answers.map((answer) => answer.body.instance)).size).toBe(3);
    });

    it("is recorded on the request's span with the problem type, so the trace is found from the client's error", async () => {
      const { url } = await start();
      const key = newKey('span');
      await send(url, { key, body: '{"amount":1}' });
      const reused = await send(url, { key, body: '{"amount":2}' });
      expectProblem(reused, 'keyReused');
      const spans = await waitForServerSpans(telemetry.exporter, reused.traceId, ['/orders']);
      const span = serverSpan(spans, '/orders')!;
      expect(span.attributes[ATTR.PROBLEM_INSTANCE]).toBe(reused.body.instance);
      expect(span.attributes[ATTR.PROBLEM_TYPE]).toBe('key-reused');
    });

    it('carries the tag of the correlation ID of the key it concerns (a version 8 UUID), and none before a key was read', async () => {
      const { url } = await start({ required: true });
      const key = newKey('tag');
      await send(url, { key, body: '{"amount":1}' });
      const reused = await send(url, { key, body: '{"amount":2}' });
      expect(correlationTagOf(String(reused.body.instance))).toBe(correlationTag(correlationIdFor('acct_contract', key)));
      const missing = await send(url, {});
      expect(String(missing.body.instance)).toMatch(/^urn:uuid:[0-9a-f-]{14}4/);
      expect(correlationTagOf(String(missing.body.instance))).toBeUndefined();
    });
  });

  describe('retryable', () => {
    it('is false for problems no retry with the same key can change: key missing, key invalid, body not read, key reused, not replayable, request failed', async () => {
      const { url } = await start({ required: true });
      expectProblem(await send(url, {}), 'keyMissing');
      expectProblem(await send(url, { key: 'a,b' }), 'keyInvalid');
      expectProblem(await send(url, { key: newKey('xml'), contentType: 'application/xml', body: '<a/>' }), 'bodyNotRead');
      const key = newKey('reused');
      await send(url, { key });
      expectProblem(await send(url, { key, body: '{"amount":9}' }), 'keyReused');
      const { url: small } = await start({ maxBodyBytes: 8 }, (ctx) => {
        ctx.status = 201;
        ctx.body = 'a body over eight bytes';
      });
      const big = newKey('big');
      await send(small, { key: big });
      expectProblem(await send(small, { key: big }), 'notReplayable');
      const { url: failing } = await start({
        scope: () => {
          throw new Error('no account');
        },
      });
      expectProblem(await send(failing, { key: newKey('scope') }), 'requestFailed');
    });

    it('is true for a duplicate of a request still in progress (409) and for an unreachable store (503)', async () => {
      const held = gate();
      const { url } = await start({}, async (ctx) => {
        await held.hold();
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey('progress');
      const first = send(url, { key });
      await held.reached;
      expectProblem(await send(url, { key }), 'inProgress');
      held.open();
      expect((await first).status).toBe(201);

      const pool = new pg.Pool({ host: '127.0.0.1', port: 1, connectionTimeoutMillis: 1_000 });
      const down = new PostgresStore({ pool });
      try {
        const { url: unreachable } = await start({}, undefined, down);
        expectProblem(await send(unreachable, { key: newKey('down') }), 'storeUnavailable');
      } finally {
        await down.close();
        await pool.end();
      }
    });
  });

  describe('idempotency_key', () => {
    it('is absent by default: a problem body never holds the key', async () => {
      const { url } = await start();
      const key = newKey('hidden');
      await send(url, { key });
      const reused = await send(url, { key, body: '{"amount":2}' });
      expect(reused.body).not.toHaveProperty('idempotency_key');
      expect(JSON.stringify(reused.body)).not.toContain(key);
    });

    it('is the key as sent with includeKeyInProblems, on every problem after a valid key, never on an invalid one', async () => {
      const { url } = await start({ includeKeyInProblems: true });
      const key = newKey('shown');
      await send(url, { key });
      const reused = await send(url, { key, body: '{"amount":2}' });
      expect(reused.body.idempotency_key).toBe(key);
      const unread = await send(url, { key, contentType: 'application/xml', body: '<a/>' });
      expect(unread.body.idempotency_key).toBe(key);
      const invalid = await send(url, { key: 'a,b' });
      expect(invalid.body).not.toHaveProperty('idempotency_key');
    });
  });

  describe('replayedHeaderAliases', () => {
    it('marks a replay under each alias beside Idempotent-Replayed, and never stores an alias a handler set', async () => {
      const { url, executions } = await start({ replayedHeaderAliases: ['Idempotency-Replayed', 'x-idempotent-replayed'] }, (ctx) => {
        ctx.status = 201;
        ctx.set('Idempotency-Replayed', 'false');
        ctx.set('X-Kept', 'yes');
        ctx.body = { ok: true };
      });
      const key = newKey('alias');
      const first = await send(url, { key });
      const replay = await send(url, { key });
      expect(executions).toHaveLength(1);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      expect(first.headers.get('x-idempotent-replayed')).toBeNull();
      for (const name of ['idempotent-replayed', 'idempotency-replayed', 'x-idempotent-replayed']) expect(replay.headers.get(name)).toBe('true');
      expect(replay.headers.get('x-kept')).toBe('yes');
    });

    it.each([['Set-Cookie'], ['Idempotency-Key'], ['bad name'], ['']])('refuses %j as an alias when the middleware is created', async (alias) => {
      await expect(start({ replayedHeaderAliases: [alias] })).rejects.toThrow(IdempotencyConfigError);
    });
  });
});
