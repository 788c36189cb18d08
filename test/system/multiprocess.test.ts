import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { openChargesSchema, type ChargesSchema } from '../helpers/charges-schema.js';

const REQUESTS = 200;
const POOL_MAX = 5;

/** Two real server processes share one database; clients hit both at once with the same key. */
describe('two server processes, one database', () => {
  let db: ChargesSchema;

  beforeAll(async () => {
    db = await openChargesSchema('multiprocess');
    const partitioned = new PostgresStore({ pool: db.pool, schema: db.schema, table: 'partitioned_records', partitioning: true });
    await partitioned.migrate();
    await partitioned.close();
  });
  afterAll(() => db?.close());

  it.each([
    ['transactional', 'a plain table'],
    ['lease', 'a plain table'],
    ['transactional', 'a table partitioned by time'],
    ['lease', 'a table partitioned by time'],
  ])(`runs ${REQUESTS} concurrent identical requests over two processes exactly once (%s mode, %s), with no 5xx and bounded pools`, async (mode, layout) => {
    const table: Record<string, string> = layout === 'a plain table' ? {} : { PARTITIONED_TABLE: 'partitioned_records' };
    const servers = await Promise.all([1, 2].map(() => db.server({ MODE: mode, HANDLER_DELAY_MS: '100', POOL_MAX: String(POOL_MAX), ...table })));
    const key = `multi-${mode}-${layout.length}-${Date.now()}`;
    const answers = await Promise.all(
      Array.from({ length: REQUESTS }, async (_, i) => {
        const response = await fetch(`${servers[i % 2]!.url}/charges`, {
          method: 'POST',
          headers: { 'idempotency-key': key, 'x-account': 'acct', 'content-type': 'application/json' },
          body: '{"amount":100}',
        });
        return { status: response.status, replayed: response.headers.get('idempotent-replayed') === 'true', body: await response.text() };
      }),
    );

    const { rows } = await db.pool.query(`SELECT pid FROM "${db.schema}".charges WHERE key = $1`, [key]);
    expect(rows).toHaveLength(1);
    expect(answers.filter((a) => a.status >= 500)).toEqual([]);
    expect(answers.every((a) => a.status === 201 || a.status === 409)).toBe(true);
    const executed = answers.filter((a) => a.status === 201 && !a.replayed);
    expect(executed).toHaveLength(1);
    for (const replay of answers.filter((a) => a.replayed)) expect(replay.body).toBe(executed[0]!.body);

    const stats = await Promise.all(servers.map(async (s) => (await fetch(`${s.url}/stats`)).json() as Promise<{ poolPeak: { total: number; waiting: number } }>));
    for (const { poolPeak } of stats) expect(poolPeak.total).toBeLessThanOrEqual(POOL_MAX);
    console.log(
      `[${mode}, ${layout}] ${REQUESTS} requests: ${executed.length} executed, ${answers.filter((a) => a.replayed).length} replayed, ` +
        `${answers.filter((a) => a.status === 409).length} conflicts; pool peaks (max ${POOL_MAX}): ` +
        stats.map((s) => `total ${s.poolPeak.total}, waiting ${s.poolPeak.waiting}`).join(' | '),
    );
    await Promise.all(servers.map((s) => s.stop()));
  });
});
