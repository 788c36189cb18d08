import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsWithKey } from '../helpers/databases.js';
import { openChargesTable, postKeyed, serveKeyedApp, type ChargesTable, type KeyedApp } from '../helpers/keyed-requests.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * node-postgres' client-side `query_timeout` wraps a query's callback; once it fires it replaces the callback by a
 * no-op, and a `Query` whose `callback` is set never emits 'error'. With the store now submitting its own `Query`
 * objects, a timed-out or failed statement must still reach the store: no hang, no pooled client leaked, a 4xx/5xx
 * problem (503 for the store), and in the end one execution per key. Pools pipelined and not, both modes.
 */
let table: ChargesTable;
let schema: string;
let charges: string;
let admin: pg.Pool;
beforeAll(async () => {
  table = await openChargesTable('s9_qtimeout', 'key text NOT NULL, n int NOT NULL, UNIQUE (key, n)');
  ({ schema, charges, admin } = table);
  // A deferred constraint trigger that sleeps 2 s: the COMMIT of a transaction that wrote here outlives query_timeout.
  await admin.query(`CREATE TABLE "${schema}".slow (key text NOT NULL)`);
  await admin.query(`CREATE FUNCTION "${schema}".sleepy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$`);
  await admin.query(`CREATE CONSTRAINT TRIGGER sleepy AFTER INSERT ON "${schema}".slow DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".sleepy()`);
});
afterAll(() => table.close());

let seq = 0;
const cases = [false, true].flatMap((pipeline) => [false, true].map((preparedStatements) => ({ pipeline, preparedStatements })));

describe.each(cases)('transactional mode, pool query_timeout 1 s: %o', ({ pipeline, preparedStatements }) => {
  let app: KeyedApp;
  let pool: pg.Pool;
  const executions = new Map<string, number>();
  const gates = new Map<string, Signal>();
  const started = new Map<string, Signal>();
  const get = (m: Map<string, Signal>, k: string) => {
    if (!m.has(k)) m.set(k, signal());
    return m.get(k)!;
  };
  beforeAll(async () => {
    app = await serveKeyedApp(table, { transactional: true, pool: { max: 4, pipeline, query_timeout: 1_000 }, store: { preparedStatements } }, async (ctx) => {
      const key = ctx.idempotency!.key;
      executions.set(key, (executions.get(key) ?? 0) + 1);
      const db = ctx.idempotency!.db!;
      const mode = ctx.get('x-mode');
      await db.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]);
      if (mode === 'duplicate-row') await db.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]);
      if (mode === 'sleep') await db.query(`SELECT pg_sleep(2)`);
      if (mode === 'slow-commit') await db.query(`INSERT INTO "${schema}".slow (key) VALUES ($1)`, [key]);
      if (mode === 'gate') {
        get(started, key).fire();
        await get(gates, key).promise;
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
  async function settled() {
    await until(() => (pool.waitingCount === 0 && pool.totalCount === pool.idleCount ? true : undefined), 'the pool to settle', 3_000).catch(() => undefined);
    return { waiting: pool.waitingCount, busy: pool.totalCount - pool.idleCount };
  }

  it('a handler statement fails (unique violation): answered, not 2xx, nothing committed, the pool whole', async () => {
    const key = `s9-qt-dup-${++seq}-${Date.now()}`;
    const first = await post(key, 'duplicate-row');
    // README: "The handler throws, or answers 5xx | the handler's | nothing stored: the key is released".
    expect(first.status, first.text).toBe(500);
    expect(await rowsWithKey(admin, charges, key)).toBe(0);
    expect(await settled()).toEqual({ waiting: 0, busy: 0 });
    const retry = await post(key);
    expect(retry.status, retry.text).toBe(201);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
  });

  it('a handler statement outlives query_timeout: answered, no hang, the pool whole, one charge in the end', async () => {
    const key = `s9-qt-sleep-${++seq}-${Date.now()}`;
    const first = await post(key, 'sleep');
    expect(first.status, first.text).not.toBe(-1);
    expect(await settled()).toEqual({ waiting: 0, busy: 0 });
    // The backend running pg_sleep outlives a client-side timeout: wait until it is gone (its transaction ended).
    await until(
      async () =>
        (await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)%' AND state <> 'idle'`)).rows[0].n === 0
          ? true
          : undefined,
      'the sleeping backend to end',
    );
    let final = first;
    for (let i = 0; i < 3 && final.status !== 201; i++) final = await post(key);
    expect(final.status, `${first.status} ${first.text} -> ${final.text}`).toBe(201);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
  });

  it("a duplicate's claim blocks behind the owner's open transaction past query_timeout: answered, then one charge", async () => {
    const key = `s9-qt-block-${++seq}-${Date.now()}`;
    const owner = post(key, 'gate');
    await get(started, key).promise;
    const duplicate = await post(key);
    expect(duplicate.status, duplicate.text).not.toBe(-1);
    expect(duplicate.status).not.toBe(201);
    expect(duplicate.type).toMatch(/problem\+json/);
    get(gates, key).fire();
    const first = await owner;
    expect(first.status, first.text).toBe(201);
    expect(await settled()).toEqual({ waiting: 0, busy: 0 });
    const retry = await post(key);
    expect(retry.status).toBe(201);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    expect(executions.get(key)).toBe(1);
  });

  it("the store's own COMMIT outlives query_timeout (a deferred trigger): answered (no 2xx unless stored), no hang, the pool whole, one charge, the retry agrees", async () => {
    const key = `s9-qt-commit-${++seq}-${Date.now()}`;
    const first = await post(key, 'slow-commit');
    expect(first.status, first.text).not.toBe(-1);
    const activity = await admin.query(
      `SELECT state, wait_event, left(query, 60) AS query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'`,
    );
    console.info('[s9-qt] activity after the first answer', JSON.stringify(activity.rows));
    await until(
      async () => ((await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep'`)).rows[0].n === 0 ? true : undefined),
      'the committing backend to finish',
    );
    expect(await settled()).toEqual({ waiting: 0, busy: 0 });
    const committed = await rowsWithKey(admin, charges, key);
    let final = await post(key);
    for (let i = 0; i < 3 && final.status !== 201; i++) final = await post(key);
    console.info(`[s9-qt] pipeline ${pipeline}: first ${first.status} ${first.text.slice(0, 90)}; committed ${committed}; final ${final.status}`);
    expect(final.status, final.text).toBe(201);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    if (first.status === 201) expect(committed).toBe(1);
  });
});
