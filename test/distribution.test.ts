import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { databaseTargets, DATABASE_URL, uniqueSchema } from './helpers/databases.js';

/**
 * migrate({ distribute }): the records table distributed with Citus (docs/scale-out.md). Refused clearly where
 * the citus extension is absent (the Postgres server of CI and PGlite); on a Citus coordinator at DATABASE_URL
 * it distributes, idempotently, and never moves a table distributed by the other column.
 */

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
const { rows } = await pool.query<{ citus: boolean }>(`SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus`);
const hasCitus = rows[0]!.citus;
const schemas: string[] = [];

afterAll(async () => {
  for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

async function storeOn(partitioning?: { intervalSeconds: number }): Promise<PostgresStore> {
  const schema = uniqueSchema('distribution');
  schemas.push(schema);
  return new PostgresStore({ pool, schema, partitioning });
}

async function distributionColumn(store: PostgresStore): Promise<string | undefined> {
  const { rows: found } = await pool.query<{ column: string }>(
    `SELECT column_to_column_name(logicalrelid, partkey) AS column FROM pg_dist_partition WHERE logicalrelid = $1::regclass`,
    [`"${store.table.schema}"."${store.table.table}"`],
  );
  return found[0]?.column;
}

describe('PostgresStore#migrate({ distribute })', () => {
  it('refuses a distribution column other than scope or key, and a malformed colocateWith, before any SQL', async () => {
    const store = await storeOn();
    await expect(store.migrate({ distribute: { column: 'fingerprint' as 'key' } })).rejects.toThrow(IdempotencyConfigError);
    await expect(store.migrate({ distribute: { colocateWith: 'orders; DROP TABLE x' } })).rejects.toThrow(/colocateWith/);
    await expect(pool.query(`SELECT to_regclass('"${store.table.schema}"."${store.table.table}"') IS NULL AS missing`)).resolves.toMatchObject({
      rows: [{ missing: true }],
    });
    await store.close();
  });

  for (const target of databaseTargets()) {
    it.skipIf(target.name !== 'PGlite' && hasCitus)(`refuses on ${target.name} without the citus extension, naming it, before creating anything`, async () => {
      const db = await target.open('distribution_refused');
      try {
        const store = new PostgresStore({ ...db.source, schema: db.schema });
        await expect(store.migrate({ distribute: true })).rejects.toThrow(/citus extension is not installed/);
        const { rows: table } = await db.sql.query<{ missing: boolean }>(`SELECT to_regclass($1) IS NULL AS missing`, [`"${db.schema}".idempotency_records`]);
        expect(table[0]!.missing).toBe(true);
      } finally {
        await db.close();
      }
    });
  }

  describe.runIf(hasCitus)('on a Citus coordinator (runs only where DATABASE_URL has the citus extension)', () => {
    it.each([
      { layout: 'a plain table', partitioning: undefined },
      { layout: 'a table partitioned by time', partitioning: { intervalSeconds: 3600 } },
    ])('distributes $layout by scope by default, again without error, and refuses to move it to key', async ({ partitioning }) => {
      const store = await storeOn(partitioning);
      await store.migrate({ distribute: true });
      expect(await distributionColumn(store)).toBe('scope');
      await store.migrate({ distribute: { column: 'scope' } });
      await expect(store.migrate({ distribute: { column: 'key' } })).rejects.toThrow(/already distributed by scope, not key/);
      await store.close();
    });

    it('distributes by key, co-located with a business table given by colocateWith', async () => {
      const store = await storeOn();
      const business = `"${store.table.schema}".orders`;
      await pool.query(`CREATE SCHEMA IF NOT EXISTS "${store.table.schema}"`);
      await pool.query(`CREATE TABLE ${business} (order_key text PRIMARY KEY)`);
      await pool.query(`SELECT create_distributed_table($1, 'order_key')`, [business]);
      await store.migrate({ distribute: { column: 'key', colocateWith: `${store.table.schema}.orders` } });
      expect(await distributionColumn(store)).toBe('key');
      const { rows: groups } = await pool.query<{ groups: number }>(
        `SELECT count(DISTINCT colocationid)::int AS groups FROM pg_dist_partition WHERE logicalrelid IN ($1::regclass, $2::regclass)`,
        [business, `"${store.table.schema}"."${store.table.table}"`],
      );
      expect(groups[0]!.groups).toBe(1);
      await store.close();
    });
  });
});
