import Koa from 'koa';
import http from 'node:http';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * Fingerprint v1 as the README describes it: query parameters sorted, or the query as sent when it does not
 * decode as UTF-8; raw non-JSON bodies (ctx.request.rawBody) by their bytes, JSON by its RFC 8785 canonical form.
 * Two requests a handler can read apart must not share a fingerprint (a replay where a 422 is due), and an
 * identical retry must replay, never 422.
 */
let server: Awaited<ReturnType<typeof serve>>;
let db: TestDatabase;
let executions = 0;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s9b_fp_query_body');
  const app = new Koa();
  app.silent = true;
  // Under /plain, JSON parsed by JSON.parse (as many apps do; co-body's parser refuses "__proto__" members),
  // keeping the text in rawBody like @koa/bodyparser does.
  app.use(async (ctx, next) => {
    if (!ctx.path.startsWith('/plain') || !ctx.is('application/json')) return next();
    const chunks: Buffer[] = [];
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    (ctx.request as { rawBody?: unknown }).rawBody = text;
    ctx.request.body = JSON.parse(text) as unknown;
    return next();
  });
  app.use(bodyParser({ enableTypes: ['json', 'form', 'text'] }));
  // An app that keeps octet-stream bytes itself.
  app.use(async (ctx, next) => {
    if (!ctx.is('application/octet-stream')) return next();
    const chunks: Buffer[] = [];
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
    (ctx.request as { rawBody?: unknown }).rawBody = Buffer.concat(chunks);
    return next();
  });
  app.use(idempotency({ store: await db.store({ replayCacheEntries: 0 }), scope: () => 'acct' }));
  app.use((ctx) => {
    executions++;
    ctx.status = 201;
    const raw = (ctx.request as { rawBody?: unknown }).rawBody;
    ctx.body = {
      n: executions,
      querystring: ctx.querystring,
      latin1: unescape(ctx.querystring),
      query: ctx.query,
      body: ctx.request.body,
      raw: Buffer.isBuffer(raw) ? raw.toString('hex') : raw,
      protoOwn: ctx.request.body && typeof ctx.request.body === 'object' ? (Object.getOwnPropertyDescriptor(ctx.request.body, '__proto__')?.value as unknown) : undefined,
    };
  });
  server = await serve(app);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

interface Answer {
  status: number;
  replayed: string | null;
  text: string;
}

/** One request with the path written byte for byte (latin1), so raw and invalid escapes reach the server as given. */
function send(path: string, key: string, type: string | undefined, body: Uint8Array | string | undefined): Promise<Answer> {
  const url = new URL(server.url);
  const payload = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
  const headers: Record<string, string> = { 'idempotency-key': key };
  if (type !== undefined) headers['content-type'] = type;
  if (payload !== undefined) headers['content-length'] = String(payload.length);
  return new Promise((resolve, reject) => {
    const request = http.request({ host: url.hostname, port: url.port, method: 'POST', path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode!,
          replayed: (response.headers['idempotent-replayed'] as string | undefined) ?? null,
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(payload);
  });
}

let seq = 0;
const newKey = () => `s9b-fp-${Date.now()}-${++seq}`;
const parts = (answer: Answer) => (JSON.parse(answer.text) as { differences?: { parts?: string[] } }).differences?.parts;
const JSON_TYPE = 'application/json';

describe('query strings', () => {
  it.each([['/op?q=%E9'], ['/op?q=%zz'], ['/op?q=%'], ['/op?q=%E9%80'], ['/op?a=%C3%A9&b=%E9&c=%zz'], ['/op?b=2&a=1&q=%E9+x'], ['/op?%E9=1&%=2'], ['/op?q=%ED%A0%80']])(
    'an identical retry of %s replays',
    async (path) => {
      const key = newKey();
      const first = await send(path, key, JSON_TYPE, '{}');
      expect([first.status, first.status === 201 ? '' : first.text]).toEqual([201, '']);
      const again = await send(path, key, JSON_TYPE, '{}');
      expect({ status: again.status, replayed: again.replayed, text: again.text }).toEqual({ status: 201, replayed: 'true', text: first.text });
    },
  );

  it.each([
    ['/op?q=%E9', '/op?q=%E8'],
    ['/op?q=%zz', '/op?q=%zy'],
    ['/op?q=%', '/op?q=%25'],
    ['/op?q=%E9%80', '/op?q=%E9%81'],
    ['/op?q=%ED%A0%80', '/op?q=%ED%A0%81'], // an encoded surrogate: not UTF-8
    ['/op?q=%C0%AF', '/op?q=%C0%AE'], // overlong forms
    ['/op?q=%F4%90%80%80', '/op?q=%F4%90%80%81'], // beyond U+10FFFF
    ['/op?%E9=1', '/op?%E8=1'], // invalid escape in a name
    ['/op?q=%EF%BF%BD', '/op?q=%E9'], // a real U+FFFD vs an escape URLSearchParams would turn into one
    ['/op?a=%C3%A9&b=%E9', '/op?a=%C3%A8&b=%E9'], // the valid part differs beside an invalid one
    ['/op?a=1&a=2', '/op?a=2&a=1'], // repeated name: ctx.query.a is ['1','2'] vs ['2','1']
    ['/op?q=%00', '/op?q='],
  ])('%s then %s under one key: 422 naming the query', async (a, b) => {
    const key = newKey();
    const before = executions;
    const first = await send(a, key, JSON_TYPE, '{}');
    expect([first.status, first.status === 201 ? '' : first.text]).toEqual([201, '']);
    const second = await send(b, key, JSON_TYPE, '{}');
    expect({ status: second.status, replayed: second.replayed, text: second.status === 201 ? second.text : '(problem)' }).toEqual({
      status: 422,
      replayed: null,
      text: '(problem)',
    });
    expect(parts(second)).toEqual(['query']);
    expect(executions - before).toBe(1);
  });

  it.each([
    ['/op?a=1&b=2', '/op?b=2&a=1'],
    ['/op?q=a+b', '/op?q=a%20b'],
    ['/op?q=%C3%A9', '/op?q=%c3%a9'],
  ])('%s then %s (same parameters, documented normalisation): replay', async (a, b) => {
    const key = newKey();
    const first = await send(a, key, JSON_TYPE, '{}');
    expect([first.status, first.status === 201 ? '' : first.text]).toEqual([201, '']);
    const second = await send(b, key, JSON_TYPE, '{}');
    expect({ status: second.status, replayed: second.replayed }).toEqual({ status: 201, replayed: 'true' });
  });

  it('reordered parameters beside an invalid escape: compared as sent (422, as documented), never a 500', async () => {
    const key = newKey();
    expect((await send('/op?a=1&q=%E9', key, JSON_TYPE, '{}')).status).toBe(201);
    const second = await send('/op?q=%E9&a=1', key, JSON_TYPE, '{}');
    expect(second.status).toBe(422);
    expect(parts(second)).toEqual(['query']);
  });
});

describe('bodies', () => {
  const OCTET = 'application/octet-stream';
  const TEXT = 'text/plain';
  const FORM = 'application/x-www-form-urlencoded';
  it.each([
    [OCTET, ''],
    [OCTET, '{}'],
    [OCTET, ' \n'],
    [TEXT, ''],
    [TEXT, '{}'],
    [TEXT, '  '],
    [FORM, ''],
    [FORM, 'a=%E9'],
    [FORM, 'a=1&a=2'],
    [JSON_TYPE, '{"__proto__":{"x":1}}', '/plain'],
    [JSON_TYPE, '{ }'],
  ])('an identical retry of %s %j replays', async (type, body, path = '/op') => {
    const key = newKey();
    const first = await send(path, key, type, body);
    expect([first.status, first.status === 201 ? '' : first.text]).toEqual([201, '']);
    const again = await send(path, key, type, body);
    expect({ status: again.status, replayed: again.replayed, text: again.text }).toEqual({ status: 201, replayed: 'true', text: first.text });
  });

  it.each([
    [OCTET, '', '{}', ['body']],
    [OCTET, '', ' ', ['body']],
    [OCTET, '{}', '{ }', ['body']],
    [TEXT, '', '{}', ['body']],
    [TEXT, '{}', '{ }', ['body']],
    [TEXT, ' ', '\t', ['body']],
    [FORM, 'a=%E9', 'a=%E8', ['body']],
    [FORM, 'a=1&a=2', 'a=2&a=1', ['body']],
    [FORM, '', 'a=', ['body']],
    [JSON_TYPE, '{"__proto__":{"x":1}}', '{"__proto__":{"x":2}}', ['body'], '/plain'],
    [JSON_TYPE, '{"__proto__":{"x":1}}', '{}', ['body'], '/plain'],
    [JSON_TYPE, '{"a":{"__proto__":[1]}}', '{"a":{}}', ['body'], '/plain'],
    [JSON_TYPE, '{"s":"\u00e9"}', '{"s":"e\u0301"}', ['body']],
    [JSON_TYPE, '[1]', '{"0":1}', ['body']],
  ])('%s %j then %j: 422 naming the body', async (type, a, b, expectedParts, path = '/op') => {
    const key = newKey();
    const before = executions;
    const first = await send(path, key, type, a);
    expect([first.status, first.status === 201 ? '' : first.text]).toEqual([201, '']);
    const second = await send(path, key, type, b);
    expect({ status: second.status, replayed: second.replayed, text: second.status === 201 ? second.text : '(problem)' }).toEqual({
      status: 422,
      replayed: null,
      text: '(problem)',
    });
    expect(parts(second)).toEqual(expectedParts);
    expect(executions - before).toBe(1);
  });

  it.each([
    [JSON_TYPE, '{}', TEXT, '{}', ['content-type', 'body']],
    [OCTET, '{}', TEXT, '{}', ['content-type', 'body']],
    [JSON_TYPE, '{}', FORM, '', ['content-type', 'body']],
  ])('%s %j then %s %j: 422 naming the content type', async (typeA, a, typeB, b, expectedParts) => {
    const key = newKey();
    expect((await send('/op', key, typeA, a)).status).toBe(201);
    const second = await send('/op', key, typeB, b);
    expect(second.status).toBe(422);
    expect(parts(second)).toEqual(expect.arrayContaining([expectedParts[0]]));
  });
});

describe('the parts the 422 names', () => {
  it('a "__proto__" member that differs is named by its pointer', async () => {
    const key = newKey();
    expect((await send('/plain', key, JSON_TYPE, '{"__proto__":{"x":1},"y":1}')).status).toBe(201);
    const second = await send('/plain', key, JSON_TYPE, '{"__proto__":{"x":2},"y":1}');
    expect(second.status).toBe(422);
    expect((JSON.parse(second.text) as { differences: unknown }).differences).toEqual({ parts: ['body'], members: ['/__proto__/x'] });
  });
  it.each([
    ['/op%E9?q=1', '/op%E8?q=1', '{}', '{}', ['path']],
    ['/op?q=%E9', '/op?q=%E8', '{"a":1}', '{"a":2}', ['query', 'body']],
    ['/op?q=%E9', '/op?q=%E9', '{"a":1}', '{"a":2}', ['body']],
    ['/op?a=1&b=%zz', '/op?a=1&b=%zz', '{"a":1}', '{"a":1,"b":null}', ['body']],
  ])('%s %s then %s %s: parts %j', async (pathA, pathB, a, b, expected) => {
    const key = newKey();
    expect((await send(pathA, key, JSON_TYPE, a)).status).toBe(201);
    const second = await send(pathB, key, JSON_TYPE, b);
    expect(second.status).toBe(422);
    expect(parts(second)).toEqual(expected);
  });
});
