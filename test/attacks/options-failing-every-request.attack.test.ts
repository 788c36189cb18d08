import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, MemoryStore, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on idempotency()'s options, as a JavaScript caller passes them: a value the middleware
 * takes at construction must not then fail every request (or every replay). Each test accepts either answer:
 * refused at construction with an IdempotencyConfigError, or requests served as the guarantees say.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

function refusedAtConstruction(options: IdempotencyOptions): boolean {
  try {
    idempotency(options);
    return false;
  } catch (error) {
    if (error instanceof IdempotencyConfigError) return true;
    throw error;
  }
}

describe('an option accepted at construction that fails every request', () => {
  let db: TestDatabase;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_accepted_options');
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  async function twice(store: IdempotencyStore, options: Partial<IdempotencyOptions>, headers: Record<string, string> = {}) {
    const { app, executions } = createTestApp({ store, options });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey('accepted');
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a', headers });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a', headers });
    return { first, retry, executions: executions.length };
  }

  /**
   * MemoryStore's claimInTransaction always rejects, so every keyed request is answered 503 store-unavailable
   * ("could not be reached ... Retry later"), a retryable answer no retry can change, for the life of the app.
   */
  it('transactional: true with a MemoryStore is refused at construction, not answered 503 store-unavailable on every request', async () => {
    const store = new MemoryStore();
    if (refusedAtConstruction({ store, transactional: true })) return;
    const { first, retry } = await twice(store, { transactional: true });
    expect({ first: first.status, retry: retry.status }).toEqual({ first: 201, retry: 201 });
  });

  /**
   * Only `store.claim` is checked: a store written against a part of the contract (no `complete`, no
   * `renewLease`) is taken, every completion fails, and the record stays in progress until its lease lapses.
   * The client got its 201, and its identical retry gets 409 in-progress instead of the replay.
   */
  it('a store without complete() and renewLease() is refused at construction, or an identical retry is replayed', async () => {
    const memory = new MemoryStore();
    const partial = {
      claim: memory.claim.bind(memory),
      claimInTransaction: memory.claimInTransaction.bind(memory),
      release: memory.release.bind(memory),
      watch: memory.watch.bind(memory),
    } as unknown as IdempotencyStore;
    if (refusedAtConstruction({ store: partial })) return;
    const { first, retry, executions } = await twice(partial, {});
    expect({ first: first.status, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions }).toEqual({
      first: 201,
      retry: 201,
      replayed: 'true',
      executions: 1,
    });
  });

  /**
   * Node gives a request's Set-Cookie header as an array even when it is sent once, and the key reader takes
   * an array for a header sent twice: every request carrying the key is refused 400 key-invalid.
   */
  it('headerName Set-Cookie is refused at construction, or a request carrying that header once is served', async () => {
    const store = new MemoryStore();
    if (refusedAtConstruction({ store, headerName: 'Set-Cookie' })) return;
    const { first, retry, executions } = await twice(store, { headerName: 'Set-Cookie' }, { 'set-cookie': newKey('cookie-key') });
    expect({ first: first.status, retry: retry.status, executions }).toEqual({ first: 201, retry: 201, executions: 1 });
  });

  /**
   * storeRetryAfterSeconds has no upper bound: 1e21 is an integer, sent as `Retry-After: 1e+21`, which is not
   * delay-seconds (RFC 9110 section 10.2.3: 1*DIGIT); clients (this package's own idempotentFetch) read it as
   * malformed. The 503 comes from a PostgresStore whose schema was never migrated (its table does not exist).
   */
  it('storeRetryAfterSeconds 1e21 is refused at construction, or the 503 carries a Retry-After of digits', async () => {
    const store = new PostgresStore({ ...db.source, schema: `${db.schema}_not_migrated` });
    closing.push(() => store.close());
    if (refusedAtConstruction({ store, storeRetryAfterSeconds: 1e21 })) return;
    const { first } = await twice(store, { storeRetryAfterSeconds: 1e21 });
    expect({ status: first.status, retryAfter: first.headers.get('retry-after') }).toEqual({ status: 503, retryAfter: expect.stringMatching(/^\d+$/) });
  });
});
