import { inspect } from 'node:util';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { diag, DiagLogLevel, trace, type DiagLogger } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore, type IdempotencyOptions } from '../../src/index.js';
import { postJson, serve } from '../helpers/http.js';
import { registerTracerProvider, simpleSpanProcessor } from '../helpers/otel-sdk.js';

/**
 * Black-box attacks on what diag and spans receive when the application's hooks misbehave on a request that
 * carries secrets (SECURITY.md 4; README: a failing hook is reported through diag, never with the key or the
 * scope): a scope function returning a scope Postgres cannot hold or index, or an object, a routeName returning
 * an object, a shouldStore that throws. The library's own reports must carry none of the request's secrets.
 * Every diag level is captured, each argument rendered in full (util.inspect), as a console logger would.
 */

const exporter = new InMemorySpanExporter();
const provider = registerTracerProvider({ spanProcessors: [simpleSpanProcessor(exporter)] });
afterAll(() => provider.shutdown());

const KEY = 'key-4111111111111111-secret';
const BODY_SECRET = 'body-ssn-078-05-1120';
const AUTHORIZATION = 'Bearer tok-3f9a8c7e6d5b4a39';
const SCOPE_SECRET = 'tenant-scope-9b8a7c6d';

let logged: string[] = [];
const render =
  (level: string) =>
  (message: string, ...args: unknown[]) =>
    void logged.push(`${level} ${message} ${args.map((arg) => inspect(arg, { depth: 5 })).join(' ')}`);
const capturing: DiagLogger = { error: render('error'), warn: render('warn'), info: render('info'), debug: render('debug'), verbose: render('verbose') };

beforeEach(() => {
  logged = [];
  diag.setLogger(capturing, { logLevel: DiagLogLevel.ALL, suppressOverrideMessage: true });
});
afterEach(() => {
  diag.disable();
  exporter.reset();
});

/** Everything recorded for the requests: diag lines, span names, attributes, events and links. */
function everything(): string {
  const spans = exporter
    .getFinishedSpans()
    .map((span) => ({ name: span.name, attributes: span.attributes, events: span.events, links: span.links, status: span.status }));
  return `${logged.join('\n')}\n${JSON.stringify(spans)}`;
}

async function serveApp(options: Partial<IdempotencyOptions>) {
  const tracer = trace.getTracer('attack');
  const app = new Koa();
  app.silent = true;
  app.use((ctx, next) => tracer.startActiveSpan(`${ctx.method} server`, (span) => next().finally(() => span.end())));
  app.use(bodyParser());
  const router = new Router();
  router.post('/op', idempotency({ store: new MemoryStore(), ...options }), (ctx) => {
    ctx.status = 201;
    ctx.body = { ok: true };
  });
  app.use(router.routes());
  return serve(app);
}

async function attack(options: Partial<IdempotencyOptions>): Promise<number[]> {
  const server = await serveApp(options);
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) {
      const response = await postJson(`${server.url}/op`, { secret: BODY_SECRET }, { key: KEY, headers: { authorization: AUTHORIZATION } });
      statuses.push(response.status);
    }
    return statuses;
  } finally {
    await server.close();
  }
}

function expectNoSecret(): void {
  expect(exporter.getFinishedSpans()).toHaveLength(2);
  const recorded = everything();
  for (const secret of [KEY, BODY_SECRET, AUTHORIZATION, 'tok-3f9a8c7e6d5b4a39', SCOPE_SECRET]) expect(recorded).not.toContain(secret);
}

describe('hooks failing on a request full of secrets', () => {
  it('a scope longer than Postgres can index, made of the secret scope: reported without it', async () => {
    const statuses = await attack({ scope: () => SCOPE_SECRET.repeat(200) });
    expect(statuses).toEqual([500, 500]);
    expect(logged.some((line) => line.includes('scope'))).toBe(true);
    expectNoSecret();
  });

  it('a scope holding a NUL: reported without it', async () => {
    await attack({ scope: () => `${SCOPE_SECRET}\0` });
    expect(logged.length).toBeGreaterThan(0);
    expectNoSecret();
  });

  it('a scope function returning an object that holds the credentials: reported without them', async () => {
    await attack({ scope: (ctx) => ({ account: SCOPE_SECRET, authorization: ctx.get('authorization') }) as unknown as string });
    expect(logged.length).toBeGreaterThan(0);
    expectNoSecret();
  });

  it('a routeName returning an object that holds the key: reported without it', async () => {
    const statuses = await attack({ scope: () => SCOPE_SECRET, routeName: (ctx) => ({ key: ctx.get('idempotency-key') }) as unknown as string });
    expect(statuses).toEqual([201, 201]);
    expect(logged.some((line) => line.includes('routeName'))).toBe(true);
    expectNoSecret();
  });

  it('a shouldStore that throws an error of its own: reported without the request’s secrets', async () => {
    await attack({
      scope: () => SCOPE_SECRET,
      shouldStore: () => {
        throw new Error('shouldStore broke');
      },
    });
    expect(logged.some((line) => line.includes('shouldStore'))).toBe(true);
    expectNoSecret();
  });
});
