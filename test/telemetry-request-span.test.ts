import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUntracedClient, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from './telemetry-harness.js';
import { type IdempotencyOptions } from '../src/index.js';
import { ATTR, MODE, NOT_REPLAYABLE_REASON, OUTCOME, type NotReplayableReason } from '../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';

/**
 * What the request's server span says about the middleware beyond the outcome: the mode it ran in
 * (`idempotency.mode`), and why an executed request's response was stored as not replayable
 * (`idempotency.not_replayable.reason`), so the `409 response-not-replayable` of its retries can be explained
 * from the original trace. Real SDK and HTTP instrumentation, a real Postgres server.
 */
const telemetry = startTestTelemetry();
const { createTestApp } = await import('./helpers/app.js');
const { serve } = await import('./helpers/http.js');

const target = POSTGRES_SERVER;
let keySeq = 0;

describe(`the request span on ${target.name}`, () => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('request_span');
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await db?.close();
  });

  async function post(options: Partial<IdempotencyOptions>, respond: Parameters<typeof createTestApp>[0]['respond']) {
    const { app } = createTestApp({ store: await db.store(), options, respond });
    const server = await serve(app);
    servers.push(server);
    const trace = newTrace();
    const key = `span-${Date.now()}-${++keySeq}`;
    const status = await asUntracedClient(async () => {
      const headers = { 'content-type': 'application/json', 'idempotency-key': key, 'x-account': 'acct_span', ...trace.headers };
      const response = await fetch(`${server.url}/orders`, { method: 'POST', headers, body: '{"amount":1}' });
      await response.arrayBuffer();
      return response.status;
    });
    const spans = await waitForServerSpans(telemetry.exporter, trace.traceId, ['/orders']);
    return { status, span: serverSpan(spans, '/orders')! };
  }

  it.each([
    ['lease mode', {}, MODE.LEASE],
    ['transactional mode', { transactional: true }, MODE.TRANSACTIONAL],
  ] as const)('names %s, and sets no not-replayable reason on a stored response', async (_, options, mode) => {
    const { status, span } = await post(options, (ctx) => {
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    expect(status).toBe(201);
    expect(span.attributes[ATTR.OUTCOME]).toBe(OUTCOME.EXECUTED);
    expect(span.attributes[ATTR.MODE]).toBe(mode);
    expect(span.attributes[ATTR.NOT_REPLAYABLE_REASON]).toBeUndefined();
  });

  // A response written around Koa (`written_around_koa`) ends the server span before the middleware is back,
  // so nothing set afterwards reaches that span: its outcome is missing too.
  const unreplayable: Array<[NotReplayableReason, Partial<IdempotencyOptions>, Parameters<typeof createTestApp>[0]['respond']]> = [
    [NOT_REPLAYABLE_REASON.STREAM, {}, (ctx) => void (ctx.body = Readable.from(['streamed']))],
    [NOT_REPLAYABLE_REASON.TOO_LARGE, { maxBodyBytes: 4 }, (ctx) => void (ctx.body = 'longer than four bytes')],
  ];
  it.each(unreplayable)('says why a response was stored as not replayable: %s', async (reason, options, respond) => {
    const { status, span } = await post(options, respond);
    expect(status).toBe(200);
    expect(span.attributes[ATTR.OUTCOME]).toBe(OUTCOME.EXECUTED);
    expect(span.attributes[ATTR.NOT_REPLAYABLE_REASON]).toBe(reason);
  });
});
