import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * Black-box attacks on the one normalised form behind the fingerprint and its per-part digests: identical
 * retries replay, different payloads answer 422 naming exactly what differed, odd inputs answer a 4xx.
 */
let server: Awaited<ReturnType<typeof serve>>;
let seq = 0;
const key = (label: string) => `s8-fp-${label}-${++seq}`;

let db: TestDatabase;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s8_fingerprint');
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser({ enableTypes: ['json', 'text'], jsonStrict: false, jsonLimit: '20mb', textLimit: '20mb' }));
  app.use(idempotency({ store: await db.store(), scope: (ctx) => ctx.get('x-account') || 'anon', fingerprintHeaders: ['x-tag'] }));
  app.use((ctx) => void ((ctx.status = 201), (ctx.body = { ok: true })));
  server = await serve(app);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

interface Sent {
  path?: string;
  body?: string | Uint8Array;
  contentType?: string;
  headers?: Array<[string, string]>;
}

async function send(k: string, sent: Sent) {
  const headers = new Headers([['idempotency-key', k], ['content-type', sent.contentType ?? 'application/json'], ...(sent.headers ?? [])]);
  const response = await fetch(`${server.url}${sent.path ?? '/op'}`, { method: 'POST', headers, body: sent.body ?? '{"a":1}', signal: AbortSignal.timeout(20_000) });
  const text = await response.text();
  const parsed = response.headers.get('content-type')?.includes('json') ? (JSON.parse(text) as { differences?: unknown }) : {};
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), differences: parsed.differences, text };
}

async function pair(first: Sent, second: Sent) {
  const k = key('pair');
  const one = await send(k, first);
  expect(one.status, one.text).toBe(201);
  return send(k, second);
}

describe('identical retries replay', () => {
  it.each<[string, Sent]>([
    ['JSON null', { body: 'null' }],
    ['JSON string', { body: '"abc"' }],
    ['repeated query keys', { path: '/op?a=2&b=1&a=1' }],
    ['odd query encodings', { path: '/op?x=%E0%A4%A&y=%ZZ&z=%2B+%20&=&&k' }],
    [
      'multi-valued fingerprinted header',
      {
        headers: [
          ['x-tag', 'b'],
          ['x-tag', 'a'],
        ],
      },
    ],
    ['text body', { contentType: 'text/plain', body: 'hello \u00e9' }],
    ['empty JSON body', { body: '' }],
    ['distinct query keys', { path: '/op?b=2&a=1' }],
    ['key names with ~ and /', { body: '{"a/b":{"~c":1},"":2}' }],
  ])('%s', async (_name, sent) => {
    const again = await pair(sent, sent);
    expect({ status: again.status, replayed: again.replayed }).toEqual({ status: 201, replayed: 'true' });
  });
});

describe('equivalent forms replay', () => {
  it.each<[string, Sent, Sent]>([
    ['query keys reordered', { path: '/op?b=2&a=1' }, { path: '/op?a=1&b=2' }],
    ['query %20 vs +', { path: '/op?a=x%20y' }, { path: '/op?a=x+y' }],
    ['media type case and parameters', { contentType: 'application/json' }, { contentType: 'Application/JSON; charset=utf-8' }],
    ['member order and white space', { body: '{"a":1,"b":[1,2]}' }, { body: ' { "b" : [ 1 , 2 ] , "a" : 1.0 } ' }],
    [
      'header folded vs repeated',
      { headers: [['x-tag', 'a, b']] },
      {
        headers: [
          ['x-tag', 'a'],
          ['x-tag', 'b'],
        ],
      },
    ],
  ])('%s', async (_name, first, second) => {
    const again = await pair(first, second);
    expect({ status: again.status, replayed: again.replayed }).toEqual({ status: 201, replayed: 'true' });
  });
});

describe('different payloads answer 422 naming what differed', () => {
  it.each<[string, Sent, Sent, unknown]>([
    ['JSON null vs none', { body: 'null' }, { body: '' }, { parts: ['body'] }],
    ['JSON null vs text null', { body: 'null' }, { contentType: 'text/plain', body: 'null' }, { parts: ['content-type', 'body'] }],
    ['JSON "abc" vs {}', { body: '"abc"' }, { body: '{}' }, { parts: ['body'] }],
    ['repeated query keys reordered', { path: '/op?a=1&a=2' }, { path: '/op?a=2&a=1' }, { parts: ['query'] }],
    [
      'header values reordered',
      {
        headers: [
          ['x-tag', 'a'],
          ['x-tag', 'b'],
        ],
      },
      {
        headers: [
          ['x-tag', 'b'],
          ['x-tag', 'a'],
        ],
      },
      { parts: ['header:x-tag'] },
    ],
    ['header added', {}, { headers: [['x-tag', 'a']] }, { parts: ['header:x-tag'] }],
    ['member renamed with ~', { body: '{"~1":1}' }, { body: '{"/":1}' }, { parts: ['body'], members: ['/~01', '/~1'] }],
    ['object vs array', { body: '{"0":1}' }, { body: '[1]' }, { parts: ['body'] }],
  ])('%s', async (_name, first, second, differences) => {
    const again = await pair(first, second);
    expect(JSON.stringify({ status: again.status, differences: again.differences })).toBe(JSON.stringify({ status: 422, differences }));
  });
});

describe('odd bodies answer a 4xx or run, never a 500 or a hang', () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  it.each<[string, () => Sent]>([
    ['nested 200000 deep', () => ({ body: deep(200_000) })],
    ['nested 5000 deep', () => ({ body: deep(5_000) })],
    ['array of 1,000,000', () => ({ body: `[${Array.from({ length: 1_000_000 }, (_, i) => i).join(',')}]` })],
    ['object of 200,000 members', () => ({ body: JSON.stringify(Object.fromEntries(Array.from({ length: 200_000 }, (_, i) => [`k${i}`, { v: [i] }]))) })],
    ['invalid UTF-8 text', () => ({ contentType: 'text/plain', body: new Uint8Array([0xff, 0xfe, 0xd8, 0x00, 0, 1, 2]) })],
  ])(
    '%s',
    async (_name, make) => {
      const sent = make();
      const k = key('odd');
      const first = await send(k, sent);
      expect(first.status < 500, first.text.slice(0, 300)).toBe(true);
      const again = await send(k, sent);
      expect(again.status < 500, again.text.slice(0, 300)).toBe(true);
      if (first.status === 201) expect(again.replayed).toBe('true');
    },
    60_000,
  );

  it('a huge retry of a small body answers 422, not a 500 or a hang', async () => {
    const again = await pair({ body: '{"a":1}' }, { body: JSON.stringify({ a: Array.from({ length: 300_000 }, (_, i) => ({ i })) }) });
    expect(again.status).toBe(422);
  }, 60_000);

  it('a retry wider than 32 differing members is named by body alone (README), not by 32 arbitrary pointers', async () => {
    // 41 differing pointers: /a (changed) and /a/0/i .. /a/39/i (added). README: "at most 32 (... a wider body by body alone)".
    const again = await pair({ body: '{"a":1}' }, { body: JSON.stringify({ a: Array.from({ length: 40 }, (_, i) => ({ i })) }) });
    expect(JSON.stringify({ status: again.status, differences: again.differences })).toBe(JSON.stringify({ status: 422, differences: { parts: ['body'] } }));
  });

  it('lone surrogates in a JSON body: 400 body-invalid, every time', async () => {
    const k = key('lone');
    for (const body of ['{"a":"\\ud800"}', '{"a":"\\ud800"}', '{"a":"\\udbff"}']) {
      const answer = await send(k, { body });
      expect(answer.status, answer.text).toBe(400);
    }
  });

  it('a deep retry of a small body answers 4xx', async () => {
    const again = await pair({ body: '{"a":1}' }, { body: `{"a":${deep(8_000)}}` });
    expect(again.status < 500, again.text.slice(0, 300)).toBe(true);
  }, 60_000);
});
