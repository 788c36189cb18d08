import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, MemoryStore, problemType, type IdempotencyOptions } from '../../src/index.js';
import type { PostgresStore } from '../../src/entries/postgres.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on idempotency()'s options, as a JavaScript caller (no type checker) can pass them: a bad
 * value must be refused at construction with an IdempotencyConfigError (code INVALID_OPTION, errors.ts), never
 * with a TypeError from deep inside, nor accepted and turned into a failure of every request.
 */

describe('idempotency() refuses a bad option at construction with IdempotencyConfigError', () => {
  const store = new MemoryStore();

  it.each([
    ['methods as a string', { methods: 'POST' }],
    ['methods holding a number', { methods: [5] }],
    ['methods empty (the middleware would apply to no request, required: true included)', { methods: [], required: true }],
    ['headerName as a number', { headerName: 5 }],
    ['excludeHeaders as a string', { excludeHeaders: 'x-request-id' }],
    ['excludeHeaders holding a number', { excludeHeaders: [5] }],
    ['fingerprintHeaders as a string', { fingerprintHeaders: 'x-tenant' }],
    ['fingerprintHeaders holding a name no header can have', { fingerprintHeaders: ['x tenant'] }],
    ['transactional as a string', { transactional: 'yes' }],
    ['includeKeyInProblems as a string', { includeKeyInProblems: 'no' }],
    ['telemetry as a number', { telemetry: 5 }],
    ['telemetry.recordRawKey as a string', { telemetry: { recordRawKey: 'no' } }],
    // Node runs a timer over 2147483647 ms after 1 ms: the lease would be renewed in a busy loop, a wait end at once.
    ['leaseMs past the longest Node timer', { leaseMs: 1e10, ttlSeconds: 1e8 }],
    ['waitMs past the longest Node timer', { waitMs: 3e9 }],
    ['maxKeyLength past 1024 (the index on (scope, key) holds a 1024-byte scope beside it)', { maxKeyLength: 1025 }],
  ])('%s', (_label, options) => {
    const construct = () => idempotency({ store, ...options } as unknown as IdempotencyOptions);
    expect(construct).toThrow(IdempotencyConfigError);
  });

  describe('limits Postgres sets', () => {
    let db: TestDatabase;
    let postgres: PostgresStore;
    beforeAll(async () => {
      db = await databaseTargets()[0]!.open('atk_options');
      postgres = await db.store();
    });
    afterAll(() => db?.close());

    it('a ttlSeconds Postgres cannot add to now() (1e13 s, past year 294276) is refused at construction, not answered 503 store-unavailable on every request', async () => {
      let constructionError: unknown;
      let answer: number | undefined;
      try {
        const { app } = createTestApp({ store: postgres, options: { ttlSeconds: 1e13 } });
        const http = await serve(app);
        answer = (await postJson(`${http.url}/orders`, { a: 1 }, { key: 'huge-ttl', account: 'a' })).status;
        await http.close();
      } catch (error) {
        constructionError = error;
      }
      expect({ constructionError, answer }).toEqual({ constructionError: expect.any(IdempotencyConfigError), answer: undefined });
    });

    /**
     * Postgres indexes (scope, key) in a btree, whose entries hold at most about 2700 bytes: a longer key fails
     * the claim's INSERT, and the client was told 503 store-unavailable (retryable) for a key no retry can store.
     */
    it('a key that maxKeyLength (10000) admits but the records index cannot hold (3000 random characters) is refused at construction or answered 400 key-invalid, never 503', async () => {
      let constructionError: unknown;
      let answer: { status: number; type: string } | undefined;
      try {
        const { app } = createTestApp({ store: postgres, options: { maxKeyLength: 10_000 } });
        const http = await serve(app);
        const key = randomBytes(3_000).toString('base64').slice(0, 3_000);
        const response = await postJson(`${http.url}/orders`, { a: 1 }, { key, account: 'a' });
        answer = { status: response.status, type: (JSON.parse(response.text) as { type: string }).type };
        await http.close();
      } catch (error) {
        constructionError = error;
      }
      const refused = constructionError instanceof IdempotencyConfigError;
      expect(refused ? 'refused at construction' : answer).toEqual(refused ? 'refused at construction' : { status: 400, type: problemType('keyInvalid') });
    });
  });
});
