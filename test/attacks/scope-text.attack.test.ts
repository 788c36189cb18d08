import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore, problemType, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on the scope a `scope` function returns: a JavaScript string Postgres text cannot hold as
 * it is. A lone surrogate is sent to Postgres as U+FFFD (node-postgres encodes UTF-8), so two distinct scopes
 * became one record, and one tenant was replayed the other's response; a NUL is refused by Postgres, which
 * answered 503 store-unavailable (retryable) to a request no retry can fix, while MemoryStore ran it. Such a
 * scope must be refused as a scope function's fault is (500 request-failed, the handler never runs), alike on
 * every store.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('a scope that Postgres text cannot hold', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_scope_text');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  async function post(store: IdempotencyStore, scope: string | number, key: string) {
    const { app, executions } = createTestApp({ store, options: { scope: () => scope } });
    const http = await serve(app);
    closing.push(() => http.close());
    const answer = await postJson(`${http.url}/orders`, { amount: 1 }, { key });
    return { status: answer.status, type: answer.status >= 400 ? (JSON.parse(answer.text) as { type: string }).type : undefined, executions: executions.length };
  }

  it('PostgresStore: two tenants whose scopes differ only in a lone surrogate never share a record (no cross-tenant replay)', async () => {
    const key = newKey('surrogate');
    const first = await post(postgres, 'tenant-\uD800', key);
    const second = await post(postgres, 'tenant-\uDC00', key);
    // Refused, or kept apart (each runs once): never the second replayed from the first's record.
    const apart = second.status === 201 && second.executions === 1;
    const refused = [first, second].every((answer) => answer.status === 500 && answer.type === problemType('requestFailed'));
    const verdict = apart ? 'kept apart' : refused ? 'refused' : `shared a record (second: ${JSON.stringify(second)})`;
    expect(verdict).toMatch(/^(kept apart|refused)$/);
  });

  it.each([
    ['PostgresStore', () => postgres],
    ['MemoryStore', () => new MemoryStore()],
  ])('%s: a scope holding NUL is answered 500 request-failed, the handler never runs', async (_name, store) => {
    const answer = await post(store(), 'tenant\u0000evil', newKey('nul'));
    expect(answer).toEqual({ status: 500, type: problemType('requestFailed'), executions: 0 });
  });

  /**
   * `String(undefined)` is refused (request-identity.ts): it would put every request without an account into
   * one shared scope. `Number(undefined)` is NaN, whose decimal string did the same.
   */
  it.each([
    ['NaN (Number(undefined))', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
  ])('a scope function returning %s is answered 500 request-failed, not one scope shared by every such request', async (_label, scope) => {
    const answer = await post(new MemoryStore(), scope, newKey('not-finite'));
    expect(answer).toEqual({ status: 500, type: problemType('requestFailed'), executions: 0 });
  });

  /**
   * Postgres indexes (scope, key) in a btree whose entries hold at most about 2700 bytes: a 3000-byte scope
   * failed the claim's INSERT, answered 503 store-unavailable (retryable) though no retry could succeed.
   */
  it.each([
    ['PostgresStore', () => postgres],
    ['MemoryStore', () => new MemoryStore()],
  ])('%s: a scope over 1024 UTF-8 bytes (342 three-byte characters) is answered 500 request-failed, the handler never runs', async (_name, store) => {
    const answer = await post(store(), '€'.repeat(342), newKey('long-scope'));
    expect(answer).toEqual({ status: 500, type: problemType('requestFailed'), executions: 0 });
  });

  it('PostgresStore: a scope of exactly 1024 UTF-8 bytes beside a key of 1024 characters is stored and replayed', async () => {
    // Random text, which Postgres cannot compress into a smaller index entry.
    const key = randomBytes(768).toString('base64');
    const scope = `${Array.from(randomBytes(341), (byte) => String.fromCharCode(0x4e00 + byte * 16)).join('')}a`;
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
