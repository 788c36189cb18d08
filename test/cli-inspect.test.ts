import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { context, propagation, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { TracerProvider } from '@opentelemetry/sdk-trace';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../examples/payments/app.js';
import { FINGERPRINT_VERSION } from '../src/index.js';
import { fromPgPool, PostgresStore } from '../src/entries/postgres.js';
import { correlationIdFor } from '../src/entries/otel.js';
import { cli } from './helpers/cli-run.js';
import { cliSchema } from './helpers/cli-schema.js';
import { leaseLapsed } from './helpers/record-clock.js';

/** koa-idempotency inspect: one record, with the trace of its first execution. */
describe('koa-idempotency CLI on the Postgres server', () => {
  const cliDatabase = cliSchema('cli_inspect', { migrated: true });
  const { schema, inSchema, claim, records } = cliDatabase;
  let pool: pg.Pool;
  let store: PostgresStore;
  beforeAll(() => {
    ({ pool, store } = cliDatabase);
  });

  describe('inspect', () => {
    /** The trace the client started: the server span of the first request is its child. */
    const originalTraceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const replayTraceId = '0af7651916cd43dd8448eb211c80319c';
    const account = 'acct_cli';
    const key = 'order-4711';
    let provider: TracerProvider;
    let server: Server;
    let url: string;

    /** A Koa app behind a server span that continues the caller's traceparent, as the HTTP instrumentation does. */
    beforeAll(async () => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      propagation.setGlobalPropagator(new W3CTraceContextPropagator());
      provider = new TracerProvider();
      trace.setGlobalTracerProvider(provider);
      const tracer = trace.getTracer('cli-test');

      for (const statement of paymentsSchemaSql(schema).split(';\n')) await pool.query(statement);
      const app = createPaymentsApp({ store, sql: fromPgPool(pool), schema });
      app.silent = true;
      const handle = app.callback();
      server = createServer((req, res) => {
        const parent = propagation.extract(ROOT_CONTEXT, req.headers);
        const span = tracer.startSpan(`${req.method} ${req.url}`, { kind: SpanKind.SERVER }, parent);
        res.on('close', () => span.end());
        // Koa's callback answers its own errors (a 500 and app.onerror): nothing is left to await here.
        void context.with(trace.setSpan(parent, span), () => handle(req, res));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/payments`;
    });
    afterAll(async () => {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
      await provider?.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    });

    const pay = (traceId: string) =>
      fetch(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${account}`,
          'idempotency-key': key,
          'content-type': 'application/json',
          traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        },
        body: JSON.stringify({ amount: 1250, currency: 'EUR' }),
      });

    it('finds the original trace ID of a replayed request, with its Jaeger URL', async () => {
      const beforeFirstMs = Date.now();
      const first = await pay(originalTraceId);
      const afterFirstMs = Date.now();
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      const replay = await pay(replayTraceId);
      expect(replay.status).toBe(201);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');

      const beforeInspectMs = Date.now();
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', key, '--jaeger-url', 'http://jaeger.test:16686/', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        scope: account,
        key,
        status: 'completed',
        attempt: 1,
        fingerprintVersion: FINGERPRINT_VERSION,
        responseStatus: 201,
        replayable: true,
        correlationId: correlationIdFor(account, key),
        traceId: originalTraceId,
        jaegerUrl: `http://jaeger.test:16686/trace/${originalTraceId}`,
      });
      expect(run.json.traceparent).toMatch(new RegExp(`^00-${originalTraceId}-[0-9a-f]{16}-01$`));
      // The record's age lies between what the clock saw around the first request and the inspection.
      expect(run.json.ageMs).toBeGreaterThanOrEqual(beforeInspectMs - afterFirstMs - 1);
      expect(run.json.ageMs).toBeLessThanOrEqual(Date.now() - beforeFirstMs + 1);
    });

    it('prints the record for people, with the Jaeger base from JAEGER_URL', async () => {
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', key], { JAEGER_URL: 'https://tracing.test/jaeger' });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^status\s+completed \(response 201, replayable\)$/m);
      expect(run.stdout).toMatch(/^attempt\s+1$/m);
      expect(run.stdout).toMatch(new RegExp(`^correlation ID\\s+${correlationIdFor(account, key)}$`, 'm'));
      expect(run.stdout).toMatch(new RegExp(`^trace ID\\s+${originalTraceId}$`, 'm'));
      expect(run.stdout).toMatch(new RegExp(`^Jaeger\\s+https://tracing\\.test/jaeger/trace/${originalTraceId}$`, 'm'));
    });

    it('shows an in-progress record with a lapsed lease, without a trace when none was active', async () => {
      await claim('inspect-lapsed', { leaseMs: 1 });
      await leaseLapsed(pool, records(), 'inspect-lapsed');
      const run = await cli(['inspect', ...inSchema, '--scope', 'cli', '--key', 'inspect-lapsed']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^status\s+in_progress \(lease lapsed: the next retry takes over\)$/m);
      expect(run.stdout).toMatch(/^trace ID\s+- \(no trace was active\)$/m);
    });

    it('exits 1 when no record holds the key', async () => {
      const run = await cli(['inspect', ...inSchema, '--scope', account, '--key', 'never-used', '--json']);
      expect(run.code).toBe(1);
      expect(run.json.error.code).toBe('not_found');
    });
  });
});
