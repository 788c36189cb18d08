import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allAttributeValues, asUntracedClient, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from '../telemetry-harness.js';
import { type IdempotencyOptions } from '../../src/index.js';
import { ATTR, MODE, OUTCOME } from '../../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';

/**
 * The request span's attributes are now set only when the span records. With a real SDK registered they must
 * still be there (correlation ID, key hash, mode) on executed, replayed and 422 requests in both modes; the raw
 * key appears in no span attribute or event unless telemetry.recordRawKey is set.
 */
const telemetry = startTestTelemetry();
const { createTestApp } = await import('../helpers/app.js');
const { serve } = await import('../helpers/http.js');

const target = POSTGRES_SERVER;
let keySeq = 0;

describe('s8: request span attributes with an SDK registered', () => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('s8_span_attrs');
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await db?.close();
  });

  async function app(options: Partial<IdempotencyOptions>) {
    const { app } = createTestApp({ store: await db.store(), options });
    const server = await serve(app);
    servers.push(server);
    return async (key: string, body: string, traceFlags = '01') => {
      const trace = newTrace();
      const traceparent = trace.headers.traceparent.replace(/-01$/, `-${traceFlags}`);
      const status = await asUntracedClient(async () => {
        const response = await fetch(`${server.url}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-account': 'acct_s8_span', traceparent },
          body,
        });
        await response.arrayBuffer();
        return response.status;
      });
      if (traceFlags !== '01') return { status, spans: [], span: undefined };
      const spans = await waitForServerSpans(telemetry.exporter, trace.traceId, ['/orders']);
      return { status, spans, span: serverSpan(spans, '/orders')! };
    };
  }

  it.each([
    ['lease', {}, MODE.LEASE],
    ['transactional', { transactional: true }, MODE.TRANSACTIONAL],
  ] as const)('%s mode: executed, replayed and 422 spans carry correlation ID, key hash, mode; never the raw key', async (_name, options, mode) => {
    const send = await app(options);
    const key = `s8-span-RAWKEY-${Date.now()}-${++keySeq}`;
    const first = await send(key, '{"amount":1}');
    const replay = await send(key, '{"amount":1}');
    const reused = await send(key, '{"amount":2}');
    expect([first.status, replay.status, reused.status]).toEqual([201, 201, 422]);
    const outcomes = [first, replay, reused].map(({ span }) => span!.attributes[ATTR.OUTCOME]);
    expect(outcomes).toEqual([OUTCOME.EXECUTED, OUTCOME.REPLAYED, OUTCOME.KEY_REUSED]);
    for (const { span, spans } of [first, replay, reused]) {
      expect(typeof span!.attributes[ATTR.CORRELATION_ID]).toBe('string');
      expect(span!.attributes[ATTR.KEY_HASH]).toMatch(/^[0-9a-f]{8,}$/);
      expect(span!.attributes[ATTR.MODE]).toBe(mode);
      expect(span!.attributes[ATTR.KEY]).toBeUndefined();
      expect(allAttributeValues(spans).filter((value) => value.includes('RAWKEY'))).toEqual([]);
      expect(spans.flatMap((s) => [s.name, ...s.events.map((e) => e.name)]).filter((value) => value.includes('RAWKEY'))).toEqual([]);
    }
    // Same key, same correlation ID and key hash on all three.
    expect(new Set([first, replay, reused].map(({ span }) => span!.attributes[ATTR.KEY_HASH])).size).toBe(1);
  });

  it('recordRawKey puts the key on the request span', async () => {
    const send = await app({ telemetry: { recordRawKey: true } });
    const key = `s8-span-raw-${Date.now()}-${++keySeq}`;
    const first = await send(key, '{"amount":1}');
    expect(first.status).toBe(201);
    expect(first.span!.attributes[ATTR.KEY]).toBe(key);
  });

  it('a sampled-out request still answers (201 then replay)', async () => {
    const send = await app({});
    const key = `s8-span-unsampled-${Date.now()}-${++keySeq}`;
    expect((await send(key, '{"amount":1}', '00')).status).toBe(201);
    expect((await send(key, '{"amount":1}', '00')).status).toBe(201);
    expect((await send(key, '{"amount":2}', '00')).status).toBe(422);
  });
});
