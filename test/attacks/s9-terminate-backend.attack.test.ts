import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsWithKey } from '../helpers/databases.js';
import { openChargesTable, postKeyed, serveKeyedApp, type ChargesTable, type KeyedApp } from '../helpers/keyed-requests.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * Transactional mode with the store's Query objects: the claim's backend killed by pg_terminate_backend from
 * another connection while the handler is inside it (between two of its statements, and while a statement of
 * its runs), the handler swallowing the failed statements and answering 201. Expected: a problem+json 5xx (not a bare 500, no hang), nothing committed, no pooled client leaked
 * or waiting, and the retry runs once and commits once. Pipelined pools and not, prepared statements on and off.
 */
let table: ChargesTable;
let charges: string;
let admin: pg.Pool;
beforeAll(async () => {
  table = await openChargesTable('s9_terminate');
  ({ charges, admin } = table);
});
afterAll(() => table.close());

const cases = [false, true].flatMap((pipeline) => [false, true].map((preparedStatements) => ({ pipeline, preparedStatements })));

describe.each(cases)('pg_terminate_backend mid-handler: %o', ({ pipeline, preparedStatements }) => {
  let app: KeyedApp;
  let pool: pg.Pool;
  const executions = new Map<string, number>();
  const pids = new Map<string, Signal<number>>();
  const gates = new Map<string, Signal>();
  const get = <T>(m: Map<string, Signal<T>>, k: string) => {
    if (!m.has(k)) m.set(k, signal<T>());
    return m.get(k)!;
  };
  beforeAll(async () => {
    app = await serveKeyedApp(table, { transactional: true, pool: { max: 3, pipeline }, store: { preparedStatements } }, async (ctx) => {
      const key = ctx.idempotency!.key;
      const attempt = (executions.get(key) ?? 0) + 1;
      executions.set(key, attempt);
      const db = ctx.idempotency!.db!;
      await db.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [key]);
      if (attempt === 1) {
        const { rows } = await db.query<{ pid: number }>(`SELECT pg_backend_pid() AS pid`);
        get(pids, key).fire(rows[0]!.pid);
        // The handler swallows its own failures (a best-effort statement) and answers 201 regardless: the library
        // must not answer that 201, its transaction (the insert above) is gone.
        if (ctx.get('x-mode') === 'in-statement') await db.query(`SELECT pg_sleep(5)`).catch(() => undefined);
        else await get(gates, key).promise;
        await db.query(`SELECT 1`).catch(() => undefined);
      }
      ctx.status = 201;
      ctx.body = { key };
    });
    pool = app.pool;
  });
  afterAll(async () => {
    for (const g of gates.values()) g.fire();
    await app?.close();
  });

  const post = (key: string, mode = '') => postKeyed(app.url, key, mode);

  it.each(['between-statements', 'in-statement'])('killed %s: answered, nothing committed, pool whole, the retry once', async (mode) => {
    const key = `s9-term-${mode}-${Date.now()}-${pipeline}-${preparedStatements}`;
    const first = post(key, mode);
    const pid = await get(pids, key).promise;
    await admin.query(`SELECT pg_terminate_backend($1)`, [pid]);
    get(gates, key).fire();
    const answer = await first;
    console.info(`[s9-term] ${JSON.stringify({ pipeline, preparedStatements, mode })}: ${answer.status} ${answer.type} ${answer.text.slice(0, 100)}`);
    expect(answer.status, answer.text).not.toBe(-1);
    expect(answer.status).toBeGreaterThanOrEqual(500);
    expect(answer.type).toMatch(/problem\+json/);
    expect(await rowsWithKey(admin, charges, key)).toBe(0);
    await until(
      () => (pool.waitingCount === 0 && pool.totalCount === pool.idleCount ? true : undefined),
      () => `pool idle (total ${pool.totalCount}, idle ${pool.idleCount}, waiting ${pool.waitingCount})`,
      3_000,
    );
    const retry = await post(key);
    expect(retry.status, retry.text).toBe(201);
    const again = await post(key);
    expect({ status: again.status, replayed: again.replayed }).toEqual({ status: 201, replayed: 'true' });
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    expect(executions.get(key)).toBe(2);
  });
});
