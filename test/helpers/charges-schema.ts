import pg from 'pg';
import { PostgresStore } from '../../src/entries/postgres.js';
import { startChildServer, type ChildServer } from './child-server.js';
import { DATABASE_URL, uniqueSchema } from './databases.js';

/**
 * The Postgres-server schema shared by the multi-process tests: the records table plus the `charges` and
 * `step_runs` tables written by test/fixtures/server.ts. Child servers started through it are stopped
 * by close().
 */
export interface ChargesSchema {
  schema: string;
  pool: pg.Pool;
  store: PostgresStore;
  server(env: Record<string, string>): Promise<ChildServer>;
  close(): Promise<void>;
}

export async function openChargesSchema(prefix: string): Promise<ChargesSchema> {
  const schema = uniqueSchema(prefix);
  const pool = new pg.Pool({ connectionString: DATABASE_URL });
  await pool.query(`CREATE SCHEMA "${schema}"`);
  const store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
  await store.migrate();
  await pool.query(`CREATE TABLE "${schema}".charges (id serial PRIMARY KEY, key text NOT NULL, pid int NOT NULL, attempt int NOT NULL)`);
  await pool.query(`CREATE TABLE "${schema}".step_runs (key text NOT NULL, step text NOT NULL)`);
  const children: ChildServer[] = [];
  return {
    schema,
    pool,
    store,
    async server(env) {
      const child = await startChildServer({ DATABASE_URL, SCHEMA: schema, ...env });
      children.push(child);
      return child;
    },
    async close() {
      await Promise.all(children.map((child) => child.stop()));
      await store.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}
