import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box checks (these hold) of idempotency()'s options in the shapes a JavaScript caller can pass:
 * Symbols, BigInts, array-likes, Sets, sparse and huge arrays, frozen arrays, lower-case methods, and every
 * numeric option at its bound and one past it. Each is refused at construction with an IdempotencyConfigError,
 * or accepted and served.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('idempotency() options in the shapes a JavaScript caller passes', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_option_shapes');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  function construction(options: Record<string, unknown>): string {
    try {
      idempotency({ store: postgres, ...options });
      return 'accepted';
    } catch (error) {
      return error instanceof IdempotencyConfigError ? 'refused' : `threw ${(error as Error).name}: ${(error as Error).message}`;
    }
  }

  it.each([
    ['methods holding a Symbol', { methods: [Symbol('POST')] }],
    ['headerName as a Symbol', { headerName: Symbol('Idempotency-Key') }],
    ['leaseMs as a BigInt', { leaseMs: 30_000n }],
    ['ttlSeconds as a Number object', { ttlSeconds: new Number(60) }],
    ['telemetry.recordScope as a Symbol', { telemetry: { recordScope: Symbol('yes') } }],
    ['methods as an array-like', { methods: { length: 1, 0: 'POST' } }],
    ['methods as a Set', { methods: new Set(['POST']) }],
    ['methods as a sparse array of length 2^32 - 1', { methods: new Array(2 ** 32 - 1) }],
    ['excludeHeaders holding a hole', { excludeHeaders: Object.assign(new Array<string>(3), { 0: 'x-a', 2: 'x-b' }) }],
    ['leaseMs 2147483648 (past the longest Node timer)', { leaseMs: 2_147_483_648, ttlSeconds: 3_000_000 }],
    ['waitRecheckMs 2147483648', { waitRecheckMs: 2_147_483_648 }],
    ['waitMs -1', { waitMs: -1 }],
    ['waitMs 1.5', { waitMs: 1.5 }],
    ['ttlSeconds 3153600001 (past 100 years)', { ttlSeconds: 3_153_600_001 }],
    ['ttlSeconds NaN', { ttlSeconds: Number.NaN }],
    ['minKeyLength 0', { minKeyLength: 0 }],
    ['minKeyLength 1025', { minKeyLength: 1025, maxKeyLength: 1024 }],
    ['maxKeyLength Infinity', { maxKeyLength: Number.POSITIVE_INFINITY }],
    ['maxKeyLength below minKeyLength', { minKeyLength: 10, maxKeyLength: 9 }],
  ])('%s is refused with an IdempotencyConfigError', (_label, options) => {
    expect(construction(options)).toBe('refused');
  });

  it.each([
    ['frozen methods', { methods: Object.freeze(['POST', 'PATCH']) }],
    ['100000 methods', { methods: Array.from({ length: 100_000 }, () => 'POST') }],
    ['leaseMs, waitMs and waitRecheckMs at 2147483647', { leaseMs: 2_147_483_647, waitMs: 2_147_483_647, waitRecheckMs: 2_147_483_647, ttlSeconds: 2_147_484 }],
    ['waitMs -0', { waitMs: -0 }],
    ['minKeyLength and maxKeyLength 1024', { minKeyLength: 1024, maxKeyLength: 1024 }],
    ['telemetry as an empty array', { telemetry: [] }],
  ])('%s is accepted', (_label, options) => {
    expect(construction(options)).toBe('accepted');
  });

  async function twice(options: Partial<IdempotencyOptions>, method: 'GET' | 'POST') {
    const { app, executions } = createTestApp({ store: postgres, options });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey(method);
    const send = () =>
      method === 'POST'
        ? postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' })
        : fetch(`${http.url}/orders`, { headers: { 'idempotency-key': key, authorization: 'Bearer a' } }).then(async (r) => ({
            status: r.status,
            headers: r.headers,
            text: await r.text(),
          }));
    const first = await send();
    const retry = await send();
    return { first: first.status, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions: executions.length };
  }

  it('methods [`get`] (lower case) applies to GET requests: one execution, the retry replayed', async () => {
    expect(await twice({ methods: ['get'] }, 'GET')).toEqual({ first: 201, retry: 201, replayed: 'true', executions: 1 });
  });

  it('ttlSeconds of 100 years (3153600000) is stored by Postgres and replayed', async () => {
    expect(await twice({ ttlSeconds: 3_153_600_000 }, 'POST')).toEqual({ first: 201, retry: 201, replayed: 'true', executions: 1 });
  });

  it('leaseMs 2147483647 with ttlSeconds 2147484 is stored by Postgres and replayed', async () => {
    expect(await twice({ leaseMs: 2_147_483_647, ttlSeconds: 2_147_484 }, 'POST')).toEqual({ first: 201, retry: 201, replayed: 'true', executions: 1 });
  });
});
