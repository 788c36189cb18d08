import { Readable } from 'node:stream';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore } from '../../src/index.js';
import { serve } from '../helpers/http.js';

/**
 * Black-box attacks on SECURITY.md 4: "Problem responses never echo the key unless the application sets
 * includeKeyInProblems". The problems test/security-key-secrecy.test.ts does not reach (a body the parser left
 * unread, a body that cannot be fingerprinted, a quoted key, a key sent twice, a response not replayable, a
 * failing scope function), each searched in its body and every header, for the key as sent and unquoted.
 */

const KEY = 'secret-4111111111111111-key';
let server: Awaited<ReturnType<typeof serve>>;

beforeAll(async () => {
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser({ enableTypes: ['json'] }));
  const router = new Router();
  const keyed = idempotency({ store: new MemoryStore(), scope: (ctx) => ctx.get('x-account') });
  const failingScope = idempotency({
    store: new MemoryStore(),
    scope: () => {
      throw new Error('no account');
    },
  });
  router.post('/op', keyed, (ctx) => void ((ctx.status = 201), (ctx.body = { ok: true })));
  router.post('/stream', keyed, (ctx) => void ((ctx.status = 201), (ctx.body = Readable.from(['streamed']))));
  router.post('/scope-fails', failingScope, (ctx) => void (ctx.status = 201));
  app.use(router.routes());
  server = await serve(app);
});
afterAll(() => server?.close());

async function send(path: string, headers: Record<string, string | string[]>, body: string) {
  const flat = new Headers();
  for (const [name, value] of Object.entries(headers)) for (const one of [value].flat()) flat.append(name, one);
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: flat, body });
  const text = await response.text();
  return { status: response.status, everything: `${JSON.stringify([...response.headers])}\n${text}` };
}

const json = { 'content-type': 'application/json', 'x-account': 'acct-1' };

describe('problems answered on a key, includeKeyInProblems off', () => {
  it.each([
    ['415 body-not-read (a media type the parser left unread)', '/op', { 'content-type': 'text/plain', 'x-account': 'a', 'idempotency-key': KEY }, 'plain text', 415],
    ['400 body-invalid (a number JSON cannot represent)', '/op', { ...json, 'idempotency-key': KEY }, '{"n":1e400}', 400],
    ['400 key-invalid (the key sent twice)', '/op', { ...json, 'idempotency-key': [KEY, KEY] }, '{}', 400],
    ['400 key-invalid (a quoted key with a bad escape)', '/op', { ...json, 'idempotency-key': `"${KEY}\\x"` }, '{}', 400],
    ['400 key-invalid (a quoted key never closed)', '/op', { ...json, 'idempotency-key': `"${KEY}` }, '{}', 400],
    ['500 request-failed (the scope function threw)', '/scope-fails', { ...json, 'idempotency-key': KEY }, '{}', 500],
  ])('%s', async (_name, path, headers, body, status) => {
    const answer = await send(path, headers, body);
    expect(answer.status).toBe(status);
    expect(answer.everything).not.toContain(KEY);
  });

  it('409 response-not-replayable, the key sent quoted', async () => {
    const headers = { ...json, 'x-account': 'acct-stream', 'idempotency-key': `"${KEY}"` };
    expect((await send('/stream', headers, '{}')).status).toBe(201);
    const retry = await send('/stream', headers, '{}');
    expect(retry.status).toBe(409);
    expect(retry.everything).not.toContain(KEY);
  });
});
