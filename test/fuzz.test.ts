import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../examples/payments/app.js';
import type { PostgresStore } from '../src/entries/postgres.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { buildRequest, rawRequest, type RawAnswer } from './helpers/raw-http.js';

/**
 * An HTTP fuzz of the payments example, in process, over raw sockets: malformed keys, bodies, headers,
 * methods and paths, plus honest retries mixed in. Every request must get a 4xx (or a 2xx when it was
 * valid after all), never a 5xx, never a hang, and memory must not grow with the number of requests.
 */

const FUZZ_REQUESTS = 5_000;
const WARM_UP_REQUESTS = 500;
const CONCURRENCY = 8;
/** A request with no complete answer in this time counts as a hang. */
const HANG_BOUND_MS = 10_000;
/** Heap growth allowed across the fuzz, after a full GC (the replay cache alone may hold some MB). */
const HEAP_GROWTH_BOUND_BYTES = 32 * 1024 * 1024;
const SEED = 20261127;

type Category = 'key' | 'body' | 'header' | 'route' | 'auth' | 'retry';
interface FuzzCase {
  category: Category;
  request: Buffer;
}

const VALID_BODY = '{"amount":1000,"currency":"EUR"}';

function post(headerLines: Array<string | Buffer>, body: Buffer | string, options: { contentLength?: number; path?: string; method?: string } = {}): Buffer {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return buildRequest({
    method: options.method,
    path: options.path,
    headerLines: [...headerLines, `Content-Length: ${options.contentLength ?? bytes.length}`],
    body: bytes,
  });
}

const account = fc.constantFrom('acct_fuzz_a', 'acct_fuzz_b');
const auth = account.map((name) => `Authorization: Bearer ${name}`);
const validKey = fc.uuid().map((uuid) => `Idempotency-Key: ${uuid}`);
const json = 'Content-Type: application/json';

/** Raw key header values: any bytes, any length, any form. */
const keyValue: fc.Arbitrary<Buffer> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 80 }).map((s) => Buffer.from(s, 'utf8')),
  fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 60 }).map((s) => Buffer.from(s, 'latin1')),
  fc.integer({ min: 200, max: 12_000 }).map((n) => Buffer.from('k'.repeat(n))),
  fc.integer({ min: 200, max: 6_000 }).map((n) => Buffer.from(`"${'\\"'.repeat(n)}"`)),
  fc.constantFrom('', ' ', '\t', '""', '"', '"\\', '"a"b"', 'a,b', '"a,b"', '"\\x"', 'ключ', '🔑', 'a b', '\x7f').map((s) => Buffer.from(s)),
  fc.string({ maxLength: 40 }).map((s) => Buffer.from(`"${s}"`)),
  fc.stringMatching(/^[!-~]{1,255}$/).map((s) => Buffer.from(s)),
);

const keyCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(auth, fc.array(fc.tuple(fc.constantFrom('Idempotency-Key', 'idempotency-key', 'IDEMPOTENCY-KEY'), keyValue), { minLength: 1, maxLength: 3 }))
  .map(([authLine, keys]) => ({
    category: 'key',
    request: post([authLine, json, ...keys.map(([name, value]) => Buffer.concat([Buffer.from(`${name}: `), value]))], VALID_BODY),
  }));

function nested(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

const bodyValue: fc.Arbitrary<{ body: Buffer | string; type?: string; contentLength?: number; extra?: string }> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }).map((body) => ({ body })),
  fc.integer({ min: 1, max: VALID_BODY.length - 1 }).map((cut) => ({ body: VALID_BODY.slice(0, cut) })),
  fc.integer({ min: 65 * 1024, max: 256 * 1024 }).map((n) => ({ body: `{"amount":1,"currency":"EUR","pad":"${'x'.repeat(n)}"}` })),
  fc.tuple(fc.integer({ min: 100, max: 32_000 }), fc.constantFrom('array' as const, 'object' as const)).map(([depth, kind]) => ({ body: nested(depth, kind) })),
  fc
    .constantFrom(
      '{"amount":1e400,"currency":"EUR"}',
      '{"amount":-0,"currency":"EUR"}',
      '{"amount":1.5,"currency":"EUR"}',
      '{"amount":"100","currency":"EUR"}',
      '{"amount":99999999999999999999999,"currency":"EUR"}',
      '{"__proto__":{"amount":5},"currency":"EUR"}',
      '{"constructor":{"prototype":{"polluted":true}},"amount":5,"currency":"EUR"}',
      '{"amount":5,"amount":6,"currency":"EUR"}',
      '{"amount":5,"currency":"\\ud800"}',
      '{"amount":5,"currency":"EUR","note":"\\ud800\\udfff\\u0000"}',
      'null',
      '[]',
      '"string"',
      '',
    )
    .map((body) => ({ body })),
  fc.constant({ body: Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) }),
  fc
    .constantFrom(
      'text/plain',
      'application/json; charset=latin1',
      'application/json; charset=utf-7',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
    )
    .map((type) => ({ body: VALID_BODY, type })),
  fc.integer({ min: 0, max: VALID_BODY.length - 1 }).map((contentLength) => ({ body: VALID_BODY, contentLength })),
  fc.constantFrom('Content-Encoding: gzip', 'Content-Encoding: deflate', 'Content-Encoding: br', 'Content-Encoding: bogus').map((extra) => ({ body: VALID_BODY, extra })),
);

const bodyCase: fc.Arbitrary<FuzzCase> = fc.tuple(auth, validKey, bodyValue).map(([authLine, keyLine, value]) => ({
  category: 'body',
  request: post([authLine, keyLine, `Content-Type: ${value.type ?? 'application/json'}`, ...(value.extra ? [value.extra] : [])], value.body, {
    contentLength: value.contentLength,
  }),
}));

/** Header lines no client library would send. */
const headerCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    auth,
    validKey,
    fc.array(fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 100 }), { minLength: 1, maxLength: 4 }),
  )
  .map(([authLine, keyLine, lines]) => ({ category: 'header', request: post([authLine, keyLine, json, ...lines], VALID_BODY) }));

const routeCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    auth,
    validKey,
    fc.constantFrom('POST', 'PATCH', 'PUT', 'DELETE', 'GET', 'OPTIONS', 'FOO'),
    fc.oneof(
      fc.constantFrom('/payments', '/payments/', '/payments?x=1', '/payments/%00', '/payments/../payments', '//payments', '/payments/not-a-uuid', '/%ZZ'),
      fc.webPath(),
      fc.integer({ min: 2_000, max: 20_000 }).map((n) => `/payments?q=${'a'.repeat(n)}`),
    ),
  )
  .map(([authLine, keyLine, method, path]) => ({ category: 'route', request: post([authLine, keyLine, json], VALID_BODY, { method, path }) }));

const authCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    validKey,
    fc.oneof(
      fc.constant(''),
      fc.string({ maxLength: 100 }).map((s) => `Authorization: Bearer ${s}`),
      fc.constant('Authorization: Basic YTpi'),
    ),
  )
  .map(([keyLine, authLine]) => ({ category: 'auth', request: post([keyLine, json, ...(authLine ? [authLine] : [])], VALID_BODY) }));

/** Honest traffic on a few shared keys: executions, replays, conflicts and key-reuse mismatches. */
const retryCase: fc.Arbitrary<FuzzCase> = fc.tuple(auth, fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 3 })).map(([authLine, key, amount]) => ({
  category: 'retry',
  request: post([authLine, `Idempotency-Key: retry-${key}`, json], `{"amount":${amount},"currency":"EUR"}`),
}));

const fuzzCase = fc.oneof(
  { weight: 4, arbitrary: keyCase },
  { weight: 4, arbitrary: bodyCase },
  { weight: 2, arbitrary: headerCase },
  { weight: 2, arbitrary: routeCase },
  { weight: 1, arbitrary: authCase },
  { weight: 2, arbitrary: retryCase },
);

/** A full, synchronous garbage collection, so heap figures compare live objects only. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

type FuzzAnswer = RawAnswer & FuzzCase;

async function runAll(port: number, cases: FuzzCase[]): Promise<FuzzAnswer[]> {
  const answers: FuzzAnswer[] = [];
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const fuzz = cases[next++]!;
      answers.push({ ...(await rawRequest(port, fuzz.request, HANG_BOUND_MS)), ...fuzz });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return answers;
}

const target = POSTGRES_SERVER;

describe(`HTTP fuzz of the payments example on ${target.name}`, () => {
  let db: TestDatabase;
  let server: Awaited<ReturnType<typeof serve>>;
  const appErrors: unknown[] = [];

  beforeAll(async () => {
    db = await target.open('fuzz');
    const store: PostgresStore = await db.store();
    for (const statement of paymentsSchemaSql(db.schema).split(';\n')) await db.sql.query(statement);
    const app = createPaymentsApp({ store, sql: db.sql, schema: db.schema });
    app.silent = true;
    // Node's HTTP parser errors (HPE_*) are the client's malformed bytes, already answered with a 400.
    app.on('error', (error: { code?: unknown }) => {
      if (!String(error.code).startsWith('HPE_')) appErrors.push(error);
    });
    server = await serve(app);
  });

  afterAll(async () => {
    await server?.close();
    await db?.close();
  });

  it('regression: a body whose Content-Encoding lies gets a 400 problem, not a 500', async () => {
    const port = Number(new URL(server.url).port);
    for (const encoding of ['gzip', 'deflate', 'br']) {
      const request = post(['Authorization: Bearer acct_fuzz_a', `Idempotency-Key: encoding-${encoding}`, json, `Content-Encoding: ${encoding}`], VALID_BODY);
      const answer = await rawRequest(port, request, HANG_BOUND_MS);
      expect(answer.status, encoding).toBe(400);
      expect(answer.headers['content-type']).toBe('application/problem+json');
    }
  });

  it('regression: GET /payments/%00 gets a 404, not a 500 from Postgres refusing a NUL byte', async () => {
    const port = Number(new URL(server.url).port);
    const answer = await rawRequest(port, buildRequest({ method: 'GET', path: '/payments/%00', headerLines: ['Authorization: Bearer acct_fuzz_a'] }), HANG_BOUND_MS);
    expect(answer.status).toBe(404);
  });

  it(`answers ${FUZZ_REQUESTS} malformed requests with no 5xx, no hang, and stable memory`, { timeout: 300_000 }, async () => {
    const port = Number(new URL(server.url).port);
    const cases = fc.sample(fuzzCase, { numRuns: WARM_UP_REQUESTS + FUZZ_REQUESTS, seed: SEED });

    await runAll(port, cases.slice(0, WARM_UP_REQUESTS));
    collectGarbage();
    const before = process.memoryUsage();
    const startedMs = performance.now();
    const answers = await runAll(port, cases.slice(WARM_UP_REQUESTS));
    const elapsedMs = performance.now() - startedMs;
    collectGarbage();
    const after = process.memoryUsage();

    const byStatus = new Map<string, number>();
    for (const answer of answers) {
      const label = `${answer.category} ${answer.timedOut ? 'hang' : answer.status}`;
      byStatus.set(label, (byStatus.get(label) ?? 0) + 1);
    }
    const summary = {
      requests: answers.length,
      seconds: Math.round(elapsedMs / 100) / 10,
      heapUsedMiB: [before.heapUsed, after.heapUsed].map(mebibytes),
      rssMiB: [before.rss, after.rss].map(mebibytes),
      outcomes: Object.fromEntries([...byStatus].sort()),
    };
    console.log(`fuzz summary ${JSON.stringify(summary)}`);

    expect(answers).toHaveLength(FUZZ_REQUESTS);
    expect(answers.filter((answer) => answer.timedOut)).toEqual([]);
    expect(answers.filter((answer) => answer.status >= 500 || answer.status === 0).map(describeAnswer)).toEqual([]);
    expect(appErrors.map(String)).toEqual([]);
    // A refusal from the app (not from Node's HTTP parser, which answers bare 4xx) is a problem document.
    const koaRefusals = answers.filter((answer) => answer.status >= 400 && answer.headers['content-type'] !== undefined && answer.category !== 'route');
    expect(koaRefusals.filter((answer) => answer.headers['content-type'] !== 'application/problem+json').map(describeAnswer)).toEqual([]);
    expect(after.heapUsed - before.heapUsed).toBeLessThan(HEAP_GROWTH_BOUND_BYTES);
  });
});

function mebibytes(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

function describeAnswer(answer: FuzzAnswer): string {
  const request = JSON.stringify(answer.request.subarray(0, 300).toString('latin1'));
  return `${answer.category}: ${answer.status} ${answer.headers['content-type'] ?? ''} ${answer.body.slice(0, 120)} <- ${request}`;
}
