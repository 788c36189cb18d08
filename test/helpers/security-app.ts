import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { paymentsSchemaSql } from '../../examples/payments/app.js';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import type { DatabaseTarget, TestDatabase } from './databases.js';
import { serve } from './http.js';
import { registerTracerProvider, simpleSpanProcessor } from './otel-sdk.js';

/**
 * What the tests of SECURITY.md's promises on a database (test/security-*.test.ts) share: a tracer provider
 * whose spans a test searches for a leaked secret, and an app on the file's schema behind a server span.
 */

/** Registers the SDK for the file that calls it (at its top level); shut down after the file. */
export function securityTelemetry() {
  const exporter = new InMemorySpanExporter();
  const provider = registerTracerProvider({ spanProcessors: [simpleSpanProcessor(exporter)] });
  const tracer = trace.getTracer('security-test');

  /** Stands in for the HTTP server instrumentation: every request runs in an active server span. */
  const serverSpan: Koa.Middleware = (ctx, next) => tracer.startActiveSpan(`${ctx.method} ${ctx.path}`, (span) => next().finally(() => span.end()));

  /** Everything telemetry recorded, as one string to search for a leaked secret. */
  function everythingRecorded(): string {
    return JSON.stringify(exporter.getFinishedSpans().map((span) => ({ name: span.name, attributes: span.attributes, events: span.events, links: span.links })));
  }

  afterAll(() => provider.shutdown());

  return { exporter, serverSpan, everythingRecorded };
}

/**
 * Opens the schema of one test file on `target` (named after `prefix`, with the payments tables), in the
 * describe block that calls it; the spans are reset after each test. `db` is set once the block's beforeAll has run.
 */
export function securityApp(target: DatabaseTarget, prefix: string, { exporter, serverSpan }: ReturnType<typeof securityTelemetry>) {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await target.open(prefix);
    for (const statement of paymentsSchemaSql(db.schema).split(';\n')) await db.sql.query(statement);
  });
  afterAll(() => db?.close());
  afterEach(() => exporter.reset());

  async function app(options: Partial<IdempotencyOptions> & { handler: Koa.Middleware }) {
    const store = await db.store({ replayCacheEntries: 0 });
    const koa = new Koa();
    koa.silent = true;
    const router = new Router();
    const { handler, ...rest } = options;
    router.post('/op', idempotency({ store, ...rest }), handler);
    koa.use(serverSpan);
    koa.use(bodyParser({ jsonLimit: '16kb' }));
    koa.use(router.routes());
    return { store, server: await serve(koa) };
  }

  return {
    get db() {
      return db;
    },
    app,
  };
}
