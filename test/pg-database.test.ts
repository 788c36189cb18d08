import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fromPgPool, PostgresStore, type SqlDatabase } from '../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';

/**
 * The node-postgres adapter's round-trip savings: the store's statements as named prepared statements,
 * and BEGIN sent together with a transaction's first statement. Postgres server only (PGlite has its
 * own adapter).
 */
describe('fromPgPool()', () => {
  const schema = uniqueSchema('pg_database');
  let pool: pg.Pool;
  /** Text of every query sent by the pool's one client: one entry per round trip. */
  let sent: string[] = [];

  beforeAll(async () => {
    // One connection, so prepared statements and session state are observable from the next query.
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
        const first = args[0] as string | { text: string };
        sent.push(typeof first === 'string' ? first : first.text);
        return query(...args);
      };
    });
    await pool.query(`CREATE SCHEMA "${schema}"`);
    await pool.query(`CREATE TABLE "${schema}".notes (id int PRIMARY KEY, body text NOT NULL)`);
  });
  beforeEach(() => {
    sent = [];
  });
  afterAll(async () => {
    await pool?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool?.end();
  });

  async function preparedNames(): Promise<Map<string, string>> {
    const { rows } = await pool.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements');
    return new Map(rows.map((row) => [row.statement, row.name]));
  }

  async function noteExists(id: number): Promise<boolean> {
    const { rows } = await pool.query(`SELECT 1 FROM "${schema}".notes WHERE id = $1`, [id]);
    return rows.length === 1;
  }

  describe('prepared statements', () => {
    it('runs a listed statement as a named prepared statement, with the same result as unnamed', async () => {
      const text = `SELECT $1::int + 1 AS answer /* listed */`;
      const db = fromPgPool(pool, { preparedStatements: [text] });
      const first = await db.query<{ answer: number }>(text, [41]);
      const second = await db.query<{ answer: number }>(text, [1]);
      expect([first.rows[0]?.answer, second.rows[0]?.answer]).toEqual([42, 2]);
      expect((await preparedNames()).get(text)).toMatch(/^koa_idempotency_[0-9a-f]{24}$/);
    });

    it('runs a statement that is not listed unnamed', async () => {
      const text = `SELECT $1::int AS value /* not listed */`;
      const db = fromPgPool(pool, { preparedStatements: ['SELECT 1'] });
      await db.query(text, [7]);
      expect((await preparedNames()).has(text)).toBe(false);
    });

    it('prepares the store statements by default and none with preparedStatements: false', async () => {
      const key = { scope: '', key: `k-${Date.now()}`, fingerprint: 'f', fingerprintVersion: 1, leaseMs: 1000, ttlSeconds: 60 };
      const unprepared = new PostgresStore({ pool, schema, table: 'records_plain', preparedStatements: false });
      await unprepared.migrate();
      await unprepared.claim(key);
      expect([...(await preparedNames()).keys()].filter((text) => text.includes('"records_plain"'))).toEqual([]);

      const prepared = new PostgresStore({ pool, schema, table: 'records_prepared' });
      await prepared.migrate();
      expect((await prepared.claim(key)).kind).toBe('claimed');
      expect((await prepared.claim(key)).kind).toBe('existing');
      const claimText = [...(await preparedNames()).keys()].find((text) => text.includes('"records_prepared"') && text.includes('INSERT'));
      expect(claimText).toBeDefined();
      // Each under its primitive's name (src/store/primitives): a new key's INSERT, then the full claim.
      const names = [...(await preparedNames())].filter(([text]) => text.includes('"records_prepared"')).map(([, name]) => name);
      expect(names.map((name) => /^koa_idempotency_([a-z_]+)_[0-9a-f]{16}$/.exec(name)?.[1]).sort()).toEqual(['claim', 'claim_new']);
      await Promise.all([unprepared.close(), prepared.close()]);
    });
  });

  describe('transactions', () => {
    let db: SqlDatabase;
    beforeAll(() => {
      db = fromPgPool(pool);
    });

    it('sends BEGIN with a first statement that has no parameters: one round trip for both', async () => {
      const tx = await db.begin();
      await tx.query('SET LOCAL lock_timeout = 1234');
      const { rows } = await tx.query<{ lock_timeout: string }>('SHOW lock_timeout');
      await tx.rollback();
      // SET LOCAL outside a transaction has no effect: the value proves the transaction was open.
      expect(rows[0]?.lock_timeout).toBe('1234ms');
      expect(sent).toEqual([
        'BEGIN;\nSET LOCAL lock_timeout = 1234',
        'SHOW lock_timeout',
        'ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all(); UNLISTEN *; CLOSE ALL; DISCARD TEMP',
      ]);
      expect((await pool.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]?.lock_timeout).not.toBe('1234ms');
    });

    it('returns the result of the caller statement, not of BEGIN', async () => {
      const tx = await db.begin();
      const { rows } = await tx.query<{ n: number }>('SELECT 5 AS n');
      await tx.commit();
      expect(rows).toEqual([{ n: 5 }]);
    });

    it('sends BEGIN on its own ahead of a first statement with parameters, and rolls its writes back', async () => {
      const tx = await db.begin();
      await tx.query(`INSERT INTO "${schema}".notes (id, body) VALUES ($1, $2)`, [1, 'rolled back']);
      await tx.rollback();
      expect(sent.slice(0, 2)).toEqual(['BEGIN', `INSERT INTO "${schema}".notes (id, body) VALUES ($1, $2)`]);
      expect(await noteExists(1)).toBe(false);
    });

    it('commits writes made after a combined BEGIN', async () => {
      const tx = await db.begin();
      await tx.query('SET LOCAL lock_timeout = 500');
      await tx.query(`INSERT INTO "${schema}".notes (id, body) VALUES ($1, $2)`, [2, 'kept']);
      await tx.commit();
      expect(await noteExists(2)).toBe(true);
    });

    it('sends nothing for a transaction that ran no statement, and returns the client to the pool', async () => {
      const tx = await db.begin();
      await tx.commit();
      expect(sent).toEqual([]);
      expect(pool.idleCount).toBe(1);
    });

    it('refuses a statement after the transaction ended', async () => {
      const tx = await db.begin();
      await tx.query('SELECT 1');
      await tx.commit();
      await expect(tx.query('SELECT 1')).rejects.toThrow('the transaction has ended');
    });

    it('reports a failing combined first statement and still rolls back cleanly', async () => {
      const tx = await db.begin();
      await expect(tx.query('SELECT * FROM no_such_table_anywhere')).rejects.toMatchObject({ code: '42P01' });
      await tx.rollback();
      expect((await pool.query<{ ok: number }>('SELECT 1 AS ok')).rows[0]?.ok).toBe(1);
    });
  });
});
