import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { idempotentFetch } from '../../src/entries/client.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * Black-box attack on the two halves of the library together: the server's remedy for a transactional failure
 * after the handler flushed its head is to cut the connection "so the client retries instead of believing the
 * writes done"; the library's own client, idempotentFetch, returns a 2xx as soon as its head arrives, body unread,
 * and never retries it. So the call reports a 201 success on its first attempt while nothing was committed, and
 * only a caller that reads the body finds out (a "terminated" TypeError, with the key's retries left to it).
 * The call must end with what was committed: retried under the same key (run once more, or the replay), or not
 * reported a success.
 */

describe('idempotentFetch and the cut after a flushed head', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let orders: string;
  let url: string;
  let server: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_client_cut');
    orders = `"${db.schema}".orders`;
    await db.sql.query(`CREATE TABLE ${orders} (key text NOT NULL)`);
    store = await db.store();
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true }));
    app.use(async (ctx) => {
      const db = ctx.idempotency!.db!;
      await db.query(`INSERT INTO ${orders} (key) VALUES ($1)`, [ctx.idempotency!.key]);
      // The first execution meets a failed statement caught without a savepoint: nothing of it will commit.
      if (++executions === 1) await db.query('SELECT 1/0').catch(() => undefined);
      ctx.status = 201;
      ctx.type = 'application/json';
      ctx.res.flushHeaders();
      ctx.body = { order: 'created' };
    });
    server = await serve(app);
    url = server.url;
  });
  afterAll(async () => {
    await server?.close();
    await db?.close();
  });

  it('the first attempt’s transaction is rolled back after its 201 head: the call does not end as a 201 success with nothing committed', async () => {
    const key = `client-cut-${Date.now()}`;
    const call = idempotentFetch(
      `${url}/orders`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"amount":1}' },
      { key, baseDelayMs: 1, maxDelayMs: 5 },
    );
    const ended = await call.then(
      async (result) => ({
        status: result.status,
        body: await result.response.text().then(
          (text) => text,
          (error: Error) => `read failed: ${error.message}`,
        ),
      }),
      () => ({ status: 0, body: 'the call failed' }),
    );
    const committed = await rowsWithKey(db.sql, orders, key);
    const reportedSuccess = ended.status >= 200 && ended.status < 300;
    // What happens now: { status: 201, body: 'read failed: terminated', committed: 0 }: a success, nothing committed.
    expect({ ...ended, committed, successWithoutCommit: reportedSuccess && committed === 0 }).toMatchObject({ successWithoutCommit: false });
  });
});
