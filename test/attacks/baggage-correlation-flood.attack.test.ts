import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { context, propagation } from '@opentelemetry/api';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore } from '../../src/index.js';
import { BAGGAGE_CORRELATION_ID, correlationIdFor } from '../../src/entries/otel.js';
import { postJson, serve } from '../helpers/http.js';
import { registerTracerProvider } from '../helpers/otel-sdk.js';

/**
 * Black-box attacks on the correlation ID the middleware hands downstream in W3C baggage. README: "the
 * correlation ID reaches the downstream service on every retry"; SECURITY.md: inbound baggage cannot set it.
 * The client owns the inbound `baggage` header, so it can fill it up to the W3C propagator's limits (180
 * entries, 8192 characters) and see whether the middleware's own entry still fits in what the handler forwards.
 */

const provider = registerTracerProvider();
afterAll(() => provider.shutdown());

const SCOPE = 'acct_flood';

/** An app that extracts the client's baggage (as the HTTP server instrumentation does) and records what its handler would forward. */
async function serveApp() {
  const forwarded: Array<string | undefined> = [];
  const app = new Koa();
  app.silent = true;
  app.use((ctx, next) => context.with(propagation.extract(context.active(), ctx.req.headers), next));
  app.use(bodyParser());
  app.use(idempotency({ store: new MemoryStore(), scope: () => SCOPE }));
  app.use((ctx) => {
    const carrier: Record<string, string> = {};
    propagation.inject(context.active(), carrier); // what the fetch or http instrumentation sends downstream
    forwarded.push(carrier.baggage);
    ctx.status = 201;
    ctx.body = { ok: true };
  });
  return { forwarded, server: await serve(app) };
}

/** The correlation ID a downstream service reads from the forwarded header. */
function downstreamCorrelationId(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  return propagation.getBaggage(propagation.extract(context.active(), { baggage: header }))?.getEntry(BAGGAGE_CORRELATION_ID)?.value;
}

let keySeq = 0;
const newKey = () => `flood-${Date.now()}-${++keySeq}`;

describe('a client filling its inbound baggage', () => {
  it.each([
    ['180 entries', (i: number) => `pad${i}`],
    // Integer-like names come first in a JavaScript object's keys: an ID put "first" through an object would not be.
    ['180 entries with integer-like names', (i: number) => String(i)],
  ])('cannot push the computed correlation ID out of the baggage forwarded downstream (%s)', async (_label, name) => {
    const { forwarded, server } = await serveApp();
    try {
      const key = newKey();
      const baggage = Array.from({ length: 180 }, (_, i) => `${name(i)}=x`).join(',');
      const response = await postJson(`${server.url}/op`, { a: 1 }, { key, headers: { baggage } });
      expect(response.status).toBe(201);
      expect(downstreamCorrelationId(forwarded[0])).toBe(correlationIdFor(SCOPE, key));
    } finally {
      await server.close();
    }
  });

  it('cannot push the computed correlation ID out of the baggage forwarded downstream (8192 characters)', async () => {
    const { forwarded, server } = await serveApp();
    try {
      const key = newKey();
      // Four entries of 2040 characters: 8163 characters with their commas, under the 8192 the server extracts.
      const baggage = Array.from({ length: 4 }, (_, i) => `pad${i}=${'v'.repeat(2035)}`).join(',');
      const response = await postJson(`${server.url}/op`, { a: 1 }, { key, headers: { baggage } });
      expect(response.status).toBe(201);
      expect(downstreamCorrelationId(forwarded[0])).toBe(correlationIdFor(SCOPE, key));
    } finally {
      await server.close();
    }
  });

  it('cannot keep a forged correlation ID in the forwarded baggage by padding around it', async () => {
    const { forwarded, server } = await serveApp();
    try {
      const key = newKey();
      const pad = Array.from({ length: 179 }, (_, i) => `pad${i}=x`).join(',');
      const baggage = `${BAGGAGE_CORRELATION_ID}=client-chosen-0123456789,${pad}`;
      const response = await postJson(`${server.url}/op`, { a: 1 }, { key, headers: { baggage } });
      expect(response.status).toBe(201);
      expect(downstreamCorrelationId(forwarded[0])).toBe(correlationIdFor(SCOPE, key));
    } finally {
      await server.close();
    }
  });
});
