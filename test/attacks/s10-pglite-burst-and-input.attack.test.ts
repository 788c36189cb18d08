import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Concurrency on PGlite's one session (duplicates and many keys at once, in both modes) and hostile input
 * aimed at the PGlite paths: bytes the response body carries through bytea, keys at the edges, scopes that
 * Postgres text cannot hold.
 */

let pglite: PGlite;
let store: PostgresStore;
let server: Awaited<ReturnType<typeof serve>>;
const executions = new Map<string, number>();

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

beforeAll(async () => {
  pglite = await PGlite.create();
  await pglite.query('CREATE TABLE charges (key text NOT NULL)');
  store = new PostgresStore({ pglite, replayCacheEntries: 0 });
  await store.migrate();
  const koa = new Koa();
  koa.silent = true;
  koa.use(bodyParser());
  const scopeOf = (ctx: Koa.Context) => String(ctx.get('x-scope') || 'acct').replace(/\\u([0-9a-f]{4})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  const tx = idempotency({ store, transactional: true, onInProgress: 'wait', scope: scopeOf });
  const lease = idempotency({ store, onInProgress: 'wait', scope: scopeOf });
  koa.use(async (ctx, next) => (ctx.path.startsWith('/tx') ? tx(ctx, next) : lease(ctx, next)));
  koa.use(async (ctx) => {
    const key = ctx.idempotency!.key;
    executions.set(`${ctx.path} ${key}`, (executions.get(`${ctx.path} ${key}`) ?? 0) + 1);
    if (ctx.path.startsWith('/tx')) await ctx.idempotency!.db!.query('INSERT INTO charges (key) VALUES ($1)', [`${ctx.path} ${key}`]);
    else await pglite.query('INSERT INTO charges (key) VALUES ($1)', [`${ctx.path} ${key}`]);
    if (ctx.path.endsWith('/bytes')) {
      ctx.status = 200;
      ctx.type = 'application/octet-stream';
      ctx.body = ALL_BYTES;
      return;
    }
    if (ctx.path.endsWith('/text-nul')) {
      ctx.status = 200;
      ctx.type = 'text/plain; charset=utf-8';
      ctx.body = 'a\u0000b\u{1F600}\uFFFF';
      return;
    }
    ctx.status = 201;
    ctx.body = { key, n: executions.get(`${ctx.path} ${key}`) };
  });
  server = await serve(koa);
});
afterAll(async () => {
  await server?.close();
  await store?.close();
  await pglite?.close();
});

const chargesOf = async (key: string) => (await pglite.query<{ n: number }>('SELECT count(*)::int AS n FROM charges WHERE key = $1', [key])).rows[0]!.n;

async function raw(path: string, key: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
    body: '{"a":1}',
  });
  return {
    status: response.status,
    type: response.headers.get('content-type'),
    bytes: Buffer.from(await response.arrayBuffer()),
    replayed: response.headers.get('idempotent-replayed'),
  };
}

describe('PGlite: bursts on one session, both modes', () => {
  for (const path of ['/tx', '/lease']) {
    it(`${path}: 15 identical requests and 30 other keys at once: one execution per key, every duplicate the first's answer`, async () => {
      const stamp = `${Date.now()}`;
      const dupKey = `s10-burst-${stamp}`;
      const others = Array.from({ length: 30 }, (_, i) => `s10-other-${stamp}-${i}`);
      const answers = await Promise.all([
        ...Array.from({ length: 15 }, () => postJson(`${server.url}${path}`, { amount: 1 }, { key: dupKey })),
        ...others.map((key) => postJson(`${server.url}${path}`, { amount: 1 }, { key })),
      ]);
      expect(answers.map((a) => a.status).every((status) => status === 201)).toBe(true);
      expect(new Set(answers.slice(0, 15).map((a) => a.text)).size).toBe(1);
      expect(await chargesOf(`${path} ${dupKey}`)).toBe(1);
      for (const key of others) expect(await chargesOf(`${path} ${key}`)).toBe(1);
    });
  }
});

describe('PGlite: hostile input on the PGlite paths', () => {
  for (const path of ['/tx/bytes', '/lease/bytes', '/tx/text-nul', '/lease/text-nul']) {
    it(`${path}: a response body with every byte value (NUL included) is replayed byte for byte`, async () => {
      const key = `s10-bytes-${path.replace(/\//g, '_')}-${Date.now()}`;
      const first = await raw(path, key);
      const replay = await raw(path, key);
      expect(first.status).toBe(200);
      expect([replay.status, replay.replayed, replay.type]).toEqual([200, 'true', first.type]);
      expect(replay.bytes.equals(first.bytes)).toBe(true);
      expect(await chargesOf(`${path} ${key}`)).toBe(1);
    });
  }

  it('keys at the edges: 255 printable characters, quoted, every printable ASCII; bad keys get 400 problem+json', async () => {
    const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))
      .filter((c) => c !== ',' && c !== '"')
      .join('');
    for (const key of ['k'.repeat(255), `"quoted-${Date.now()}"`, `${printable}-${Date.now()}`]) {
      const first = await raw('/tx', key);
      const replay = await raw('/tx', key);
      expect([first.status, replay.status, replay.replayed]).toEqual([201, 201, 'true']);
    }
    for (const key of ['k'.repeat(2000), 'a,b', '"unterminated', '\t']) {
      const answer = await raw('/tx', key);
      expect([answer.status, answer.type]).toEqual([400, 'application/problem+json']);
    }
  });

  it('scopes Postgres text cannot hold (NUL, lone surrogates) never run the handler and never share a record', async () => {
    const key = `s10-scope-${Date.now()}`;
    for (const scope of ['a\\u0000b', 'a\\ud800', 'a\\udc00']) {
      const answer = await raw('/tx', key, { 'x-scope': scope });
      expect([answer.status, answer.type]).toEqual([500, 'application/problem+json']);
    }
    expect(await chargesOf(`/tx ${key}`)).toBe(0);
    // Two scopes that differ only past what a lossy encoding would keep stay apart.
    const a = await raw('/tx', key, { 'x-scope': 'tenant-\\u00e9' });
    const b = await raw('/tx', key, { 'x-scope': 'tenant-\\u00e8' });
    expect([a.status, b.status, b.replayed]).toEqual([201, 201, null]);
    expect(await chargesOf(`/tx ${key}`)).toBe(2);
  });

  it('a JSON body with \\u0000 and lone-surrogate escapes: 400 body-invalid or executed once, never a 5xx', async () => {
    for (const body of ['{"a":"\\u0000"}', '{"a":"\\ud800"}', '{"\\u0000":1}']) {
      const key = `s10-body-${Date.now()}-${body.length}-${Math.random()}`;
      const response = await fetch(`${server.url}/tx`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body });
      expect(response.status).toBeLessThan(500);
      if (response.status === 201) {
        const replay = await fetch(`${server.url}/tx`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body });
        expect([replay.status, replay.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
      }
      await response.arrayBuffer();
    }
  });
});
