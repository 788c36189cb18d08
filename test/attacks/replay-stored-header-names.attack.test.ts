import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { buildRequest, rawRequest } from '../helpers/raw-http.js';

/**
 * Black-box attack on the replay's second header filter (the built-in list and `excludeHeaders`, applied again at
 * replay) with records another app version or another store adapter wrote: names in any case (`SET-COOKIE`,
 * `Authorization`), a credential stored under two case variants, multi-valued headers, hop-by-hop names, a
 * `Content-Length` that would misframe the replay. The replay must send none of the never-replayed or excluded
 * names in any case, keep a multi-valued header whole, and stay well framed.
 */

describe('replay of a record whose headers another version stored', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let records: string;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_replay_names');
    records = `"${db.schema}".idempotency_records`;
    // No replay cache: every retry reads the record as the test rewrote it.
    store = await db.store({ replayCacheEntries: 0 });
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  async function storedThenRewritten(headers: Record<string, string | string[]>) {
    const { app, executions } = createTestApp({ store, options: { excludeHeaders: ['X-Session-Token'] } });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = `names-${Date.now()}-${Math.random()}`;
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect(first.status).toBe(201);
    const { rowCount } = await db.sql.query(`UPDATE ${records} SET response_headers = $1::jsonb WHERE key = $2`, [JSON.stringify(headers), key]);
    expect(rowCount).toBe(1);
    return { port: Number(new URL(http.url).port), key, executions };
  }

  function retry(port: number, key: string) {
    const body = '{"amount":1}';
    return rawRequest(
      port,
      buildRequest({
        path: '/orders',
        headerLines: [`Idempotency-Key: ${key}`, 'Authorization: Bearer a', 'Content-Type: application/json', `Content-Length: ${body.length}`],
        body,
      }),
      3_000,
    );
  }

  it('never-replayed and excluded names in any case are not sent; a multi-valued Link stays whole; the replay is well framed', async () => {
    const { port, key, executions } = await storedThenRewritten({
      'Content-Type': 'application/json; charset=utf-8',
      'SET-COOKIE': ['sid=first-client', 'csrf=first-client'],
      'Set-Cookie': 'sid=other-case',
      AUTHORIZATION: 'Bearer first-client',
      'Www-Authenticate': 'Bearer realm="x"',
      'Authentication-Info': 'nextnonce="n"',
      'X-SESSION-TOKEN': 'secret',
      'x-Session-Token': 'secret-2',
      'Content-Length': '999',
      'TRANSFER-ENCODING': 'chunked',
      Connection: 'close',
      'Keep-Alive': 'timeout=1',
      Trailer: 'X-Checksum',
      Upgrade: 'h2c',
      TraceParent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'Idempotent-Replayed': 'false',
      Link: ['</a>; rel="a"', '</b>; rel="b"'],
      Location: '/orders/1',
    });
    const answer = await retry(port, key);
    const sent = Object.keys(answer.headers);
    const forbidden = [
      'set-cookie',
      'authorization',
      'www-authenticate',
      'authentication-info',
      'x-session-token',
      'trailer',
      'upgrade',
      'traceparent',
      'keep-alive',
      'transfer-encoding',
    ].filter((name) => sent.includes(name));
    expect({
      status: answer.status,
      timedOut: answer.timedOut,
      forbidden,
      executions: executions.length,
      replayed: answer.headers['idempotent-replayed'],
      contentLength: Number(answer.headers['content-length']),
      bodyLength: Buffer.byteLength(answer.body, 'latin1'),
      location: answer.headers.location,
      connection: answer.headers.connection,
    }).toEqual({
      status: 201,
      timedOut: false,
      forbidden: [],
      executions: 1,
      replayed: 'true',
      contentLength: Buffer.byteLength(answer.body, 'latin1'),
      bodyLength: Buffer.byteLength(answer.body, 'latin1'),
      location: '/orders/1',
      connection: 'close',
    });
  });

  it('a multi-valued header stored under two case variants is sent, not a 500', async () => {
    const { port, key } = await storedThenRewritten({ Link: '</a>; rel="a"', link: ['</b>; rel="b"', '</c>; rel="c"'], 'Content-Type': 'application/json' });
    const answer = await retry(port, key);
    expect({ status: answer.status, replayed: answer.headers['idempotent-replayed'] }).toEqual({ status: 201, replayed: 'true' });
  });
});
