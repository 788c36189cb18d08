import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { type SqlQueryable } from '../../src/index.js';
import { fromPgPool, fromPGlite, PostgresStore, type PostgresStoreOptions, type SqlDatabase } from '../../src/entries/postgres.js';

/**
 * The databases every store and middleware test runs against: a real Postgres server (the one at DATABASE_URL,
 * or the embedded one test/global-setup.ts starts when it is unset) and an embedded PGlite.
 * Each test file gets its own schema, dropped at the end, so files run in parallel.
 */
export interface TestDatabase {
  kind: 'postgres' | 'pglite';
  schema: string;
  /** Adapter for the test's own queries. */
  sql: SqlDatabase;
  /** What PostgresStore takes for this database. */
  source: { pool: pg.Pool } | { pglite: PGlite };
  /** A migrated store on this file's schema; closed with the database. */
  store(options?: Omit<PostgresStoreOptions, 'pool' | 'pglite' | 'database' | 'schema'>): Promise<PostgresStore>;
  /** A new pool on the same database (Postgres only), for tests that need a second "process". */
  newPool?(max?: number): pg.Pool;
  close(): Promise<void>;
}

export interface DatabaseTarget {
  name: string;
  open(prefix: string): Promise<TestDatabase>;
}

/**
 * The Postgres server's URL: always set, by the user or by test/global-setup.ts (which starts an embedded
 * server), before any test file is imported.
 */
export const DATABASE_URL: string = requireDatabaseUrl();

function requireDatabaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: the tests get it from test/global-setup.ts (vitest globalSetup)');
  return url;
}

/**
 * KOA_IDEMPOTENCY_TEST_DISTRIBUTE=scope|key: the Postgres server's tables distributed with Citus by that
 * column (DATABASE_URL then points at a Citus coordinator; docs/scale-out.md). Unset: local tables.
 */
const TEST_DISTRIBUTION = testDistribution(process.env.KOA_IDEMPOTENCY_TEST_DISTRIBUTE);

function testDistribution(column: string | undefined): { column: 'scope' | 'key' } | undefined {
  if (column === undefined || column === '') return undefined;
  if (column !== 'scope' && column !== 'key') throw new Error(`KOA_IDEMPOTENCY_TEST_DISTRIBUTE must be scope or key; got ${column}`);
  return { column };
}

/** The Postgres server alone, for the suites one database is enough for. */
export const POSTGRES_SERVER: DatabaseTarget = { name: 'Postgres server', open: (prefix) => openPostgres(prefix, false) };

/**
 * `pipelined`: also a Postgres server whose pool pipelines (`pipeline: true`), where the store sends its claim
 * with BEGIN and its completion with COMMIT (src/store/pg-transaction.ts): for the suites about transactions.
 */
export function databaseTargets(options: { pipelined?: boolean } = {}): DatabaseTarget[] {
  return [
    POSTGRES_SERVER,
    ...(options.pipelined ? [{ name: 'Postgres server, pipelined', open: (prefix: string) => openPostgres(prefix, true) }] : []),
    { name: 'PGlite', open: openPGlite },
  ];
}

/** How many rows of `table` (schema-qualified and quoted) carry `key`: how many times an operation ran. */
export async function rowsWithKey(sql: SqlQueryable, table: string, key: string): Promise<number> {
  const { rows } = await sql.query<{ count: number }>(`SELECT count(*)::int AS count FROM ${table} WHERE key = $1`, [key]);
  return Number(rows[0]!.count);
}

export function uniqueSchema(prefix: string): string {
  return `t_${prefix.replace(/[^a-z0-9_]/g, '_')}_${randomBytes(4).toString('hex')}`.slice(0, 48);
}

async function openPostgres(prefix: string, pipeline: boolean): Promise<TestDatabase> {
  const schema = uniqueSchema(prefix);
  const pools: pg.Pool[] = [];
  // Small pools: test files run in parallel against one server whose max_connections is 100.
  const newPool = (max = 10) => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max, pipeline });
    pool.on('error', () => undefined); // a killed connection must not crash the test runner
    pools.push(pool);
    return pool;
  };
  const pool = newPool();
  await pool.query(`CREATE SCHEMA "${schema}"`);
  return withStores({
    kind: 'postgres',
    schema,
    sql: fromPgPool(pool),
    source: { pool },
    newPool,
    async close() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    },
  });
}

async function openPGlite(prefix: string): Promise<TestDatabase> {
  const schema = uniqueSchema(prefix);
  const pglite = await PGlite.create();
  await pglite.query(`CREATE SCHEMA "${schema}"`);
  return withStores({
    kind: 'pglite',
    schema,
    sql: fromPGlite(pglite),
    source: { pglite },
    close: () => pglite.close(),
  });
}

function withStores(database: Omit<TestDatabase, 'store'>): TestDatabase {
  const stores: PostgresStore[] = [];
  return {
    ...database,
    async store(options = {}) {
      const store = new PostgresStore({ ...database.source, schema: database.schema, ...options });
      await store.migrate({ distribute: database.kind === 'postgres' ? TEST_DISTRIBUTION : undefined });
      stores.push(store);
      return store;
    },
    async close() {
      await Promise.all(stores.map((store) => store.close()));
      await database.close();
    },
  };
}
