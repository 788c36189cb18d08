import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore, problemType, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on the scope's 1024-byte limit: a scope over 1024 UTF-8 bytes (or holding a NUL or a lone
 * surrogate) is the scope function's fault, answered 500 request-failed on every store with the handler never
 * run; a scope of 1024 bytes beside a key of 1024 characters is stored and replayed. Astral characters take 4
 * UTF-8 bytes and 2 UTF-16 units, so a count of units or of code points misses the limit.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

/** `count` random astral characters (planes 2 and 3): 4 UTF-8 bytes each, and text Postgres cannot compress. */
function astral(count: number): string {
  const bytes = randomBytes(count * 2);
  return Array.from({ length: count }, (_, i) => String.fromCodePoint(0x20000 + bytes.readUInt16BE(i * 2))).join('');
}

/** Random decimal digits, which Postgres cannot compress into a small index entry. */
function randomDigits(count: number): string {
  return `9${Array.from(randomBytes(count - 1), (byte) => String(byte % 10)).join('')}`;
}

describe('the scope’s UTF-8 byte limit', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_scope_bytes');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  const stores: Array<[string, () => IdempotencyStore]> = [
    ['PostgresStore', () => postgres],
    ['MemoryStore', () => new MemoryStore()],
  ];

  async function post(store: IdempotencyStore, scope: unknown, key: string) {
    const { app, executions } = createTestApp({ store, options: { scope: () => scope as string, maxKeyLength: 1024 } });
    const http = await serve(app);
    closing.push(() => http.close());
    const answer = await postJson(`${http.url}/orders`, { amount: 1 }, { key });
    return { status: answer.status, type: answer.status >= 400 ? (JSON.parse(answer.text) as { type: string }).type : undefined, executions: executions.length };
  }

  const refused = { status: 500, type: problemType('requestFailed'), executions: 0 };

  /**
   * A BigInt scope (pg's int8 parser and Prisma give account ids as BigInt) is taken as its decimal string
   * without the byte limit: 3000 digits failed the claim's INSERT on Postgres (index row too large), answered
   * 503 store-unavailable (retryable) though no retry can succeed, while MemoryStore ran the handler.
   */
  it.each(stores)('%s: a scope function returning a BigInt of 3000 digits is answered 500 request-failed, the handler never runs', async (_name, store) => {
    const answer = await post(store(), BigInt(randomDigits(3000)), newKey('bigint-scope'));
    expect(answer).toEqual(refused);
  });

  // Holds: 257 astral characters are 514 UTF-16 units and 1028 UTF-8 bytes.
  it.each(stores)('%s: a scope of 257 astral characters (1028 bytes) is answered 500 request-failed', async (_name, store) => {
    expect(await post(store(), astral(257), newKey('astral-over'))).toEqual(refused);
  });

  // Holds: 1021 ASCII bytes and one astral character are 1025 bytes, though only 1022 code points.
  it.each(stores)('%s: a scope of 1025 bytes ending in an astral character is answered 500 request-failed', async (_name, store) => {
    expect(await post(store(), `${'a'.repeat(1021)}${astral(1)}`, newKey('astral-edge-over'))).toEqual(refused);
  });

  // Holds: the high half of an astral character cut off at the end is a lone surrogate.
  it.each(stores)('%s: a scope of astral characters cut inside the last one is answered 500 request-failed', async (_name, store) => {
    expect(await post(store(), astral(100).slice(0, -1), newKey('astral-cut'))).toEqual(refused);
  });

  // Holds: 1020 ASCII bytes and one astral character are exactly 1024 bytes.
  it.each(stores)('%s: a scope of exactly 1024 bytes ending in an astral character is served', async (_name, store) => {
    expect(await post(store(), `${'a'.repeat(1020)}${astral(1)}`, newKey('astral-edge'))).toEqual({ status: 201, type: undefined, executions: 1 });
  });

  // Holds: the longest scope (256 random astral characters, 1024 bytes) beside the longest key (1024 random characters).
  it('PostgresStore: a scope of 256 random astral characters beside a random key of 1024 characters is stored and replayed', async () => {
    const scope = astral(256);
    const key = randomBytes(768).toString('base64');
    const { app, executions } = createTestApp({ store: postgres, options: { scope: () => scope, maxKeyLength: 1024 } });
    const http = await serve(app);
    closing.push(() => http.close());
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key });
    expect({ first: first.status, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions: executions.length }).toEqual({
      first: 201,
      retry: 201,
      replayed: 'true',
      executions: 1,
    });
  });
});
