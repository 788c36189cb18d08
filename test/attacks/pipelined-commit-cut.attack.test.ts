import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * Black-box attack on transactional mode over a PIPELINED pool (`pipeline: true`, the completion and its COMMIT
 * written together) with the connection cut by a TCP proxy right before Postgres sees the COMMIT, and right after
 * it (Postgres runs it, the app never hears back). The unpipelined pool has these cases in
 * test/faults-connection-cut.test.ts. Either way the first answer must not be a 2xx, and the key must end up
 * committed once and replayed, or free and run once more: one charge in all.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('pipelined transactional mode: the connection cut around the COMMIT', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let pool: pg.Pool;
  let charges: string;
  let url: string;
  let close: () => Promise<void>;
  let store: PostgresStore;

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_pipelined_commit_cut');
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL)`);
    await db.store();
    const target = new URL(DATABASE_URL);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    pool = new pg.Pool({ connectionString: proxy.urlFor(DATABASE_URL), max: 2, pipeline: true });
    pool.on('error', () => undefined);
    store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0 });
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true }));
    app.use(async (ctx) => {
      await ctx.idempotency!.db!.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [ctx.idempotency!.key]);
      ctx.status = 201;
      ctx.body = { charged: ctx.idempotency!.key };
    });
    const http = await serve(app);
    url = `${http.url}/orders`;
    close = () => http.close();
  });
  afterAll(async () => {
    await close?.();
    await store?.close();
    await pool?.end().catch(() => undefined);
    await proxy?.close();
    await db?.close();
  });

  /** Retries with the key until an answer that is not 503 (bounded): what the client ends with. */
  async function retryUntilFinal(key: string) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const answer = await postJson(url, { amount: 1 }, { key });
      if (answer.status !== 503 && answer.status !== 409) return answer;
    }
    throw new Error('no final answer in 20 retries');
  }

  it.each([['before'], ['after']] as const)('cut %s Postgres gets the COMMIT: the first answer is no 2xx, one charge in all, the retry gets it', async (when) => {
    const key = newKey(`cut-${when}`);
    const cut = proxy.cutWhen('COMMIT', when);
    const first = await postJson(url, { amount: 1 }, { key });
    await cut;
    const final = await retryUntilFinal(key);
    const again = await postJson(url, { amount: 1 }, { key });
    expect({
      first: first.status,
      final: final.status,
      again: again.status,
      againReplayed: again.headers.get('idempotent-replayed'),
      charges: await rowsWithKey(db.sql, charges, key),
    }).toEqual({ first: 503, final: 201, again: 201, againReplayed: 'true', charges: 1 });
  });
});
