import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, MemoryStore, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on `replayedHeaderAliases`: each alias is sent as `<name>: true` on every replay, and is
 * never stored from the handler's response. The option refuses the names never replayed (Set-Cookie, hop-by-hop)
 * and the key's header, but takes a header that describes the representation (Content-Type, Location, ETag):
 * then every replay loses the handler's value of that header and carries `true` instead, so an identical retry
 * no longer gets the first response. Such an alias must be refused at construction, or the replay must still
 * carry the handler's header.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('a replay-marker alias that names a representation header', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_alias_names');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  it.each([
    ['Content-Type', 'content-type'],
    ['Location', 'location'],
    ['ETag', 'etag'],
  ] as const)('PostgresStore: replayedHeaderAliases [%s] is refused at construction, or the replay keeps the handler’s %s', async (alias, header) => {
    const options = { replayedHeaderAliases: [alias] };
    let refused = false;
    try {
      idempotency({ store: postgres, ...options });
    } catch (error) {
      refused = error instanceof IdempotencyConfigError;
    }
    if (refused) return;
    const { app } = createTestApp({
      store: postgres,
      options,
      respond: (ctx) => {
        ctx.status = 201;
        ctx.set('Location', '/orders/1');
        ctx.set('ETag', '"v1"');
        ctx.body = { order: 1 };
      },
    });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey(`alias-${header}`);
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect({ replayed: retry.headers.get('idempotent-replayed'), [header]: retry.headers.get(header) }).toEqual({
      replayed: 'true',
      [header]: first.headers.get(header),
    });
  });

  it('MemoryStore: replayedHeaderAliases [Content-Type] does not turn the replay’s Content-Type into "true"', async () => {
    const options = { replayedHeaderAliases: ['Content-Type'] };
    let refused = false;
    try {
      idempotency({ store: new MemoryStore(), ...options });
    } catch (error) {
      refused = error instanceof IdempotencyConfigError;
    }
    if (refused) return;
    const { app } = createTestApp({ store: new MemoryStore(), options });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey('alias-memory');
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect({ first: first.headers.get('content-type'), retry: retry.headers.get('content-type') }).toEqual({
      first: 'application/json; charset=utf-8',
      retry: 'application/json; charset=utf-8',
    });
  });
});
