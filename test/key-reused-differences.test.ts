import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, FINGERPRINT_VERSION, problemType, type IdempotencyOptions, type IdempotencyStore } from '../src/index.js';
import { createTestApp } from './helpers/app.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { until } from './helpers/child-processes.js';

/**
 * `422 key-reused` says what differed (the IETF working group's issue 36): which part of the request, and for a
 * JSON body the JSON Pointers of the members, never a value. Through HTTP, on both databases; a record written
 * before the per-part digests existed still answers, with a plain 422.
 */
let keySeq = 0;
const newKey = (label: string) => `diff-${label}-${Date.now()}-${++keySeq}`;
const ACCOUNT = 'acct_diff';

interface Sent {
  method?: string;
  path?: string;
  body?: string;
  contentType?: string;
  headers?: Record<string, string>;
}

describe.each(databaseTargets())('422 key-reused on $name', (target) => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('key_reused_diff');
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await db?.close();
  });

  async function start(options: Partial<IdempotencyOptions> = {}, store?: IdempotencyStore) {
    const { app, executions } = createTestApp({ store: store ?? (await db.store()), options });
    const server = await serve(app);
    servers.push(server);
    const send = async (key: string, sent: Sent) => {
      const response = await fetch(`${server.url}${sent.path ?? '/orders'}`, {
        method: sent.method ?? 'POST',
        headers: { 'content-type': sent.contentType ?? 'application/json', 'idempotency-key': key, 'x-account': ACCOUNT, ...sent.headers },
        body: sent.body ?? '{"amount":4200,"currency":"EUR"}',
      });
      const text = await response.text();
      return { status: response.status, text, body: response.headers.get('content-type')?.includes('json') ? (JSON.parse(text) as Record<string, unknown>) : {} };
    };
    return { send, executions };
  }

  /** The first request, then the second under the same key: the second's answer. */
  async function reuse(first: Sent, second: Sent, options: Partial<IdempotencyOptions> = {}) {
    const { send } = await start(options);
    const key = newKey('reuse');
    expect((await send(key, first)).status).toBe(201);
    return send(key, second);
  }

  it('names the JSON member that differs, never its value', async () => {
    const answer = await reuse({ body: '{"amount":4200,"currency":"EUR"}' }, { body: '{"currency":"EUR","amount":4201}' });
    expect(answer.status).toBe(422);
    expect(answer.body.type).toBe(problemType('keyReused'));
    expect(answer.body.differences).toEqual({ parts: ['body'], members: ['/amount'] });
    expect(answer.body.detail).toContain('/amount');
    expect(answer.text).not.toMatch(/4200|4201/);
  });

  it('names nested, added and removed members by JSON Pointer, escaping ~ and /', async () => {
    const first = {
      items: [
        { sku: 'A-1', qty: 1 },
        { sku: 'B-2', qty: 1 },
      ],
      note: 'x',
      'a/b': 1,
      'c~d': 1,
    };
    const second = {
      items: [
        { sku: 'A-1', qty: 1 },
        { sku: 'B-3', qty: 1 },
      ],
      gift: true,
      'a/b': 2,
      'c~d': 2,
    };
    const answer = await reuse({ body: JSON.stringify(first) }, { body: JSON.stringify(second) });
    expect(answer.body.differences).toEqual({ parts: ['body'], members: ['/a~1b', '/c~0d', '/gift', '/items/1/sku', '/note'] });
  });

  it('names the method, path, query, content type and a fingerprinted header that differ', async () => {
    expect((await reuse({ path: '/orders' }, { path: '/orders?express=1' })).body.differences).toEqual({ parts: ['query'] });
    expect((await reuse({ path: '/orders' }, { method: 'PATCH', path: '/orders/7' })).body.differences).toEqual({ parts: ['method', 'path'] });
    expect((await reuse({}, { contentType: 'text/plain' })).body.differences).toEqual({ parts: ['content-type', 'body'] });
    const header = await reuse({ headers: { 'x-api-version': '1' } }, { headers: { 'x-api-version': '2' } }, { fingerprintHeaders: ['X-Api-Version'] });
    expect(header.body.differences).toEqual({ parts: ['header:x-api-version'] });
  });

  it('stops at a bounded depth and count: a deep change is named by its member at depth 4, a wide body by the body alone', async () => {
    const deep = (leaf: number) => JSON.stringify({ a: { b: { c: { d: { e: { f: leaf } } } } } });
    expect((await reuse({ body: deep(1) }, { body: deep(2) })).body.differences).toEqual({ parts: ['body'], members: ['/a/b/c/d'] });
    const wide = (last: number) => JSON.stringify(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`m${i}`, i === 99 ? last : i])));
    expect((await reuse({ body: wide(1) }, { body: wide(2) })).body.differences).toEqual({ parts: ['body'] });
    // 40 members in 4 groups do not fit 32 at depth 2: the groups are listed instead.
    const grouped = (last: number) =>
      JSON.stringify(Object.fromEntries(['g0', 'g1', 'g2', 'g3'].map((g, gi) => [g, Array.from({ length: 10 }, (_, i) => (gi === 3 && i === 9 ? last : i))])));
    expect((await reuse({ body: grouped(1) }, { body: grouped(2) })).body.differences).toEqual({ parts: ['body'], members: ['/g3'] });
  });

  it('answers a plain 422 for a record written before the per-part digests existed, and still replays its identical retry', async () => {
    const store = await db.store();
    const { send, executions } = await start({}, store);
    const input = (amount: number) => ({
      method: 'POST',
      path: '/orders',
      querystring: '',
      headers: {},
      body: { amount },
      mediaType: 'application/json',
    });
    const key = newKey('old');
    // The record as the previous release wrote it: the bare v1 fingerprint.
    const claim = await store.claim({
      scope: ACCOUNT,
      key,
      fingerprint: fingerprint(input(1)),
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: 30_000,
      ttlSeconds: 3600,
    });
    if (claim.kind !== 'claimed') throw new Error('expected a fresh claim');
    await store.complete(claim.lease, {
      replayable: true,
      response: { status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"old":true}') },
    });

    const reused = await send(key, { body: '{"amount":2}' });
    expect(reused.status).toBe(422);
    expect(reused.body).not.toHaveProperty('differences');
    const retry = await send(key, { body: '{"amount":1}' });
    expect([retry.status, retry.text]).toEqual([201, '{"old":true}']);
    expect(executions).toHaveLength(0);
  });

  it("takes over a lapsed in-progress record written before the digests existed, as the same request's retry", async () => {
    for (const partitioning of [false, true]) {
      const store = await db.store({ table: `records_${partitioning ? 'p' : 'plain'}`, ...(partitioning ? { partitioning: true } : {}) });
      const { send, executions } = await start({}, store);
      const key = newKey('lapsed');
      const v1 = fingerprint({ method: 'POST', path: '/orders', querystring: '', headers: {}, body: { amount: 1 }, mediaType: 'application/json' });
      await store.claim({ scope: ACCOUNT, key, fingerprint: v1, fingerprintVersion: FINGERPRINT_VERSION, leaseMs: 1, ttlSeconds: 3600 });
      await until(
        async () => (await store.find(ACCOUNT, key))?.leaseRemainingMs === 0,
        5_000,
        () => 'the lease did not lapse',
      );
      const retry = await send(key, { body: '{"amount":1}' });
      expect(retry.status, `partitioning: ${partitioning}`).toBe(201);
      expect(executions).toHaveLength(1);
      expect((await store.find(ACCOUNT, key))?.attempt).toBe(2);
    }
  });
});
