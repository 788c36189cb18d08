import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on `excludeHeaders` across a deploy: the names are left out when a response is stored, and
 * not when one is replayed. A team that finds its handler sends a session token in `X-Session-Token` adds it to
 * `excludeHeaders` and deploys; the records the previous version stored keep the token, and the new version
 * replays it to every retry for up to `ttlSeconds` (a day by default), though it now says the header is never
 * stored. Two apps on one store stand for the two versions of a rolling deploy.
 */

describe('a header added to excludeHeaders after records holding it were stored', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_exclude_change');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  async function version(options: { excludeHeaders?: string[] }) {
    const { app, executions } = createTestApp({
      store: postgres,
      options,
      respond: (ctx) => {
        ctx.status = 201;
        ctx.set('X-Session-Token', 'secret-of-the-first-client');
        ctx.body = { order: 1 };
      },
    });
    const http = await serve(app);
    closing.push(() => http.close());
    return { url: http.url, executions };
  }

  it('the new version’s replay does not send the excluded header the old version stored', async () => {
    const before = await version({});
    const after = await version({ excludeHeaders: ['X-Session-Token'] });
    const key = `exclude-change-${Date.now()}`;
    const first = await postJson(`${before.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const retry = await postJson(`${after.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect({
      first: first.status,
      retry: retry.status,
      replayed: retry.headers.get('idempotent-replayed'),
      token: retry.headers.get('x-session-token'),
    }).toEqual({ first: 201, retry: 201, replayed: 'true', token: null });
  });
});
