import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * A body nested just as deep as the fingerprint's canonicalisation fits on the stack is accepted; the same body
 * as a retry under a key first used with another body goes through the 422's per-part comparison
 * (differences()), which canonicalises it again at another stack depth. It must answer 422 or 400, never 500.
 */
let server: Awaited<ReturnType<typeof serve>>;
let db: TestDatabase;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s8_deep_retry');
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser({ enableTypes: ['json'], jsonLimit: '10mb' }));
  app.use(idempotency({ store: await db.store(), scope: () => 'acct' }));
  app.use((ctx) => void ((ctx.status = 201), (ctx.body = { ok: true })));
  server = await serve(app);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

let seq = 0;
const deep = (n: number) => `{"a":${'['.repeat(n)}${']'.repeat(n)}}`;
async function post(key: string, body: string) {
  const response = await fetch(`${server.url}/op`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body });
  return { status: response.status, text: await response.text() };
}

describe('a retry nested as deep as the stack allows', () => {
  it('answers 4xx at every depth around the limit', async () => {
    let low = 100;
    let high = 200_000;
    while (high - low > 1) {
      const mid = (low + high) >> 1;
      const answer = await post(`s8-deep-probe-${++seq}`, deep(mid));
      if (answer.status === 201) low = mid;
      else high = mid;
    }
    const statuses: Record<number, number> = {};
    for (let n = low - 40; n <= low + 2; n++) {
      const key = `s8-deep-${++seq}`;
      expect((await post(key, '{"a":1}')).status).toBe(201);
      statuses[n] = (await post(key, deep(n))).status;
    }
    expect(Object.entries(statuses).filter(([, status]) => status >= 500)).toEqual([]);
  }, 120_000);
});
