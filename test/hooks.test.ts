import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import type { DataPoint, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, problemType, type IdempotencyOptions, type IdempotencyStore } from '../src/index.js';
import { ATTR, METRIC, OUTCOME } from '../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { freshMetricsPerTest } from './telemetry-harness.js';

/**
 * The options that are the application's code, called per request (`scope`, `required`, `routeName`,
 * `shouldStore`), guarded like OpenTelemetry contrib's safeExecuteInTheMiddle: a hook that throws, rejects
 * or returns nonsense is reported through diag (never with the key) and the request gets a documented
 * answer, never Koa's bare 500 and never a hang. Real HTTP, a real Postgres server.
 */

const target = POSTGRES_SERVER;
const metricReader = freshMetricsPerTest();
let keySeq = 0;
const newKey = (label: string) => `${label}-secret-${Date.now()}-${++keySeq}`;

/** What diag.error received during the test: the message and the rendered arguments. */
let diagErrors: string[] = [];
const capturingLogger: DiagLogger = {
  error: (message, ...args) => diagErrors.push([message, ...args.map((arg) => (arg instanceof Error ? `${arg.name}: ${arg.message}` : String(arg)))].join(' ')),
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  verbose: () => undefined,
};

function points(metrics: ResourceMetrics, name: string): DataPoint<number>[] {
  return metrics.scopeMetrics
    .flatMap((scope) => scope.metrics)
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as DataPoint<number>[]);
}

describe(`application hooks on ${target.name}`, () => {
  let db: TestDatabase;
  let store: IdempotencyStore;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('hooks');
    store = await db.store();
  });
  beforeEach(() => {
    diagErrors = [];
    diag.setLogger(capturingLogger, { logLevel: DiagLogLevel.ERROR, suppressOverrideMessage: true });
  });
  afterEach(async () => {
    diag.disable();
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });
  afterAll(() => db?.close());

  /** `POST /orders` under the middleware; the scope is the `X-Account` header unless `options` say otherwise. */
  async function start(options: Partial<IdempotencyOptions> = {}, status = 201) {
    const app = new Koa();
    const appErrors: unknown[] = [];
    app.on('error', (error: unknown) => appErrors.push(error));
    const router = new Router();
    let executions = 0;
    router.post('/orders', idempotency({ store, scope: (ctx) => ctx.get('X-Account'), ...options }), (ctx) => {
      executions++;
      ctx.status = status;
      ctx.body = { execution: executions };
    });
    app.use(bodyParser());
    app.use(router.routes());
    const server = await serve(app);
    servers.push(server);
    const post = async (key?: string) => {
      const headers: Record<string, string> = { 'content-type': 'application/json', 'x-account': 'acct_hooks' };
      if (key !== undefined) headers['idempotency-key'] = key;
      // A hang would fail the test here, not at vitest's timeout.
      const response = await fetch(`${server.url}/orders`, { method: 'POST', headers, body: '{"amount":1}', signal: AbortSignal.timeout(5_000) });
      const text = await response.text();
      return { status: response.status, type: response.headers.get('content-type'), text, replayed: response.headers.get('idempotent-replayed') };
    };
    return { post, executions: () => executions, appErrors };
  }

  function expectRequestFailedProblem(answer: { status: number; type: string | null; text: string }, detail: RegExp) {
    expect(answer.status).toBe(500);
    expect(answer.type).toBe('application/problem+json');
    const problem = JSON.parse(answer.text) as { type: string; status: number; detail: string };
    expect(problem.type).toBe(problemType('requestFailed'));
    expect(problem.status).toBe(500);
    expect(problem.detail).toMatch(detail);
    return problem;
  }

  /** The diag errors of one hook; none may contain the request's key. */
  function hookReports(hook: string, key?: string): string[] {
    if (key !== undefined) expect(diagErrors.filter((line) => line.includes(key))).toEqual([]);
    return diagErrors.filter((line) => line.includes(`the ${hook} option failed`));
  }

  describe('scope', () => {
    const cases: Array<[string, IdempotencyOptions['scope']]> = [
      [
        'throws',
        () => {
          throw new Error('no account on this request');
        },
      ],
      ['rejects', () => Promise.reject(new Error('account lookup failed'))],
      [
        'throws a non-Error',
        () => {
          // eslint-disable-next-line @typescript-eslint/only-throw-error -- a hook may throw anything: that is the case under test
          throw 'a string, not an Error';
        },
      ],
      ['returns undefined', () => undefined as unknown as string],
    ];
    it.each(cases)('that %s: 500 request-failed problem saying the scope function failed, the handler never runs, diag and the app are told', async (_, scope) => {
      const { post, executions, appErrors } = await start({ scope });
      const key = newKey('scope');
      const answer = await post(key);
      const problem = expectRequestFailedProblem(answer, /scope function/);
      expect(problem.detail).not.toContain(key);
      expect(answer.text).not.toContain(key);
      expect(executions()).toBe(0);
      expect(hookReports('scope', key)).toHaveLength(1);
      expect(appErrors).toHaveLength(1);
      expect(appErrors[0]).toBeInstanceOf(Error);
    });

    it('that failed leaves nothing behind: the same key runs once the scope works', async () => {
      let broken = true;
      const { post, executions } = await start({ scope: (ctx) => (broken ? Promise.reject(new Error('down')) : ctx.get('X-Account')) });
      const key = newKey('scope-recovers');
      expect((await post(key)).status).toBe(500);
      broken = false;
      expect((await post(key)).status).toBe(201);
      const replay = await post(key);
      expect([replay.status, replay.replayed]).toEqual([201, 'true']);
      expect(executions()).toBe(1);
    });
  });

  describe('routeName', () => {
    async function routesCounted(): Promise<Record<string, string>> {
      const metrics = await metricReader().read();
      return Object.fromEntries(points(metrics, METRIC.REQUESTS).map((point) => [String(point.attributes[ATTR.OUTCOME]), String(point.attributes[ATTR.HTTP_ROUTE])]));
    }

    it('that throws: the request proceeds, executes once and replays, labelled with the router template', async () => {
      const { post, executions } = await start({
        routeName: () => {
          throw new Error('label lookup failed');
        },
      });
      const key = newKey('route');
      expect((await post(key)).status).toBe(201);
      const replay = await post(key);
      expect([replay.status, replay.replayed]).toEqual([201, 'true']);
      expect(executions()).toBe(1);
      expect(await routesCounted()).toEqual({ [OUTCOME.EXECUTED]: '/orders', [OUTCOME.REPLAYED]: '/orders' });
      expect(hookReports('routeName', key)).toHaveLength(2);
    });

    it('that throws on a refused request: the refusal is still the documented 400, counted under the template', async () => {
      const { post, executions } = await start({
        routeName: () => {
          throw new Error('label lookup failed');
        },
        required: true,
      });
      const missing = await post();
      expect(missing.status).toBe(400);
      expect(JSON.parse(missing.text).type).toBe(problemType('keyMissing'));
      const invalid = await post('two, keys');
      expect(invalid.status).toBe(400);
      expect(JSON.parse(invalid.text).type).toBe(problemType('keyInvalid'));
      expect(executions()).toBe(0);
      expect(await routesCounted()).toEqual({ [OUTCOME.INVALID_KEY]: '/orders' });
    });

    it('that returns a non-string: the label falls back to the router template and the mistake is reported', async () => {
      const { post } = await start({ routeName: () => undefined as unknown as string });
      const key = newKey('route-undefined');
      expect((await post(key)).status).toBe(201);
      expect(await routesCounted()).toEqual({ [OUTCOME.EXECUTED]: '/orders' });
      expect(hookReports('routeName', key)).toHaveLength(1);
    });
  });

  describe('required', () => {
    it('that throws counts as true: a request without a key gets 400 key-missing (a key fixes it), a keyed one runs', async () => {
      let calls = 0;
      const { post, executions } = await start({
        required: () => {
          calls++;
          throw new Error('feature flag service down');
        },
      });
      const missing = await post();
      expect(missing.status).toBe(400);
      expect(missing.type).toBe('application/problem+json');
      expect(JSON.parse(missing.text).type).toBe(problemType('keyMissing'));
      expect(executions()).toBe(0);
      expect(hookReports('required')).toHaveLength(1);

      const key = newKey('required');
      expect((await post(key)).status).toBe(201);
      expect(executions()).toBe(1);
      expect(calls).toBe(1); // asked only for the request without a key
    });
  });

  describe('shouldStore', () => {
    it('that throws: 500 request-failed, the key released (a retry runs again), diag and the app are told', async () => {
      const { post, executions, appErrors } = await start({
        shouldStore: () => {
          throw new Error('policy lookup failed');
        },
      });
      const key = newKey('should-store');
      expectRequestFailedProblem(await post(key), /could not be stored/);
      expectRequestFailedProblem(await post(key), /could not be stored/);
      expect(executions()).toBe(2);
      expect(hookReports('shouldStore', key)).toHaveLength(2);
      expect(appErrors).toHaveLength(2);
    });
  });

  describe('hooks that are not functions', () => {
    it('are refused when the middleware is created, not at the first request', () => {
      const make = (options: Record<string, unknown>) => () => idempotency({ store, ...options });
      expect(make({ scope: 'acct_1' })).toThrow(IdempotencyConfigError);
      expect(make({ scope: 'acct_1' })).toThrow(/scope must be a function; got "acct_1"/);
      expect(make({ routeName: '/orders' })).toThrow(/routeName must be a function/);
      expect(make({ shouldStore: 200 })).toThrow(/shouldStore must be a function/);
      expect(make({ required: 'yes' })).toThrow(/required \(a boolean or a function\) must be a function/);
      expect(make({ required: true, scope: () => 'a', routeName: () => 'r', shouldStore: () => true })).not.toThrow();
    });
  });
});
