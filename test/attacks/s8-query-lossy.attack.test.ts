import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * The normalised query (URLSearchParams, sorted) decodes each percent-escape as UTF-8, replacing any invalid
 * sequence with U+FFFD before re-encoding. Two query strings that differ in their bytes (`q=%E9` and `q=%E8`, an
 * ISO-8859-1 "é" and "è" as a latin1 form or an old client sends them) normalise to the same `q=%EF%BF%BD`: the
 * second, a different request the handler reads differently (ctx.querystring, or a latin1 query parser), is
 * answered with the first one's stored response instead of 422.
 */
let server: Awaited<ReturnType<typeof serve>>;
let db: TestDatabase;
let executions = 0;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s8_query_lossy');
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser({ enableTypes: ['json'] }));
  app.use(idempotency({ store: await db.store(), scope: () => 'acct' }));
  app.use((ctx) => {
    executions++;
    ctx.status = 201;
    // The query as sent, which a latin1 query parser (qs with charset: 'iso-8859-1') reads as é or è.
    ctx.body = { querystring: ctx.querystring, latin1: unescape(ctx.querystring) };
  });
  server = await serve(app);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

async function post(path: string, key: string) {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: '{}' });
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), text: await response.text() };
}

describe('query strings that differ only in non-UTF-8 escapes', () => {
  it('q=%E9 then q=%E8 under one key: 422, not a replay of the first', async () => {
    const key = `s8-query-${Date.now()}`;
    expect((await post('/op?q=%E9', key)).status).toBe(201);
    const second = await post('/op?q=%E8', key);
    expect({ status: second.status, replayed: second.replayed }).toEqual({ status: 422, replayed: null });
    expect(executions).toBe(1);
  });
});
