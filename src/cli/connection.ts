import pg from 'pg';
import { errorCode, sqlstateOf } from '../error-code.js';
import type { PartitioningOptions } from '../store/partition-maintenance.js';
import { fromPgPool } from '../store/pg-database.js';
import { PostgresStore } from '../store/postgres-store.js';
import { qualified, tableLayout, type TableLayout, type TableName } from '../store/schema.js';
import type { SqlQueryable } from '../store/sql-database.js';
import { CliError } from './errors.js';
import { EXIT } from './exit-codes.js';

/** A black-holed host would otherwise hang the CLI until the kernel gives up (minutes). */
export const CONNECT_TIMEOUT_MS = 5_000;

/** Undefined table (42P01) and undefined schema (3F000): the migration has not run. */
const TABLE_MISSING_SQLSTATES: ReadonlySet<string> = new Set(['42P01', '3F000']);
/** The connection broke mid-command: class 08 (connection exception), 57P01-57P03 (server shutting down or starting). */
const CONNECTION_LOST = /^(08...|57P0[123])$/;
/** The same, as Node reports it for the socket. */
const SOCKET_ERRORS: ReadonlySet<string> = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

export interface Connection {
  store: PostgresStore;
  /** Whether the table was partitioned, plain or missing when the command started. */
  layout: TableLayout;
  /** The `partitioning` option the store was built with. */
  partitioning: PartitioningOptions | boolean;
  /** The pool under the store, for the catalog queries of the commands. */
  db: SqlQueryable;
  /** host:port/database, never the password: for messages. */
  target: string;
  close(): Promise<void>;
}

/** Chooses the store's `partitioning` option once the table's layout is known. */
export type PartitioningChoice = (layout: TableLayout, db: SqlQueryable) => Promise<PartitioningOptions | boolean>;

/**
 * Opens a small pool on DATABASE_URL and proves the server answers, so that "unreachable" and "login
 * refused" are told apart from a failing command. Then reads whether the table is partitioned and builds
 * the store over the pool, as an application would, with the `partitioning` option `choose` gives.
 */
export async function connect(env: NodeJS.ProcessEnv, table: TableName, choose: PartitioningChoice): Promise<Connection> {
  const target = describeTarget(databaseUrl(env.DATABASE_URL));
  const pool = new pg.Pool({
    // As given: node-postgres reads its own parameters (sslmode, host=/socket/dir, ...) from the string.
    connectionString: env.DATABASE_URL,
    max: 2,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'koa-idempotency-cli',
  });
  pool.on('error', () => undefined); // an idle connection dropped by the server: the next query reports it
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw connectionError(error, target);
  }
  let layout: TableLayout;
  let partitioning: PartitioningOptions | boolean;
  let store: PostgresStore;
  const db = fromPgPool(pool);
  try {
    layout = await tableLayout(db, table);
    partitioning = await choose(layout, db);
    store = new PostgresStore({ pool, schema: table.schema, table: table.table, replayCacheEntries: 0, partitioning });
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
  return {
    store,
    layout,
    partitioning,
    db,
    target,
    async close() {
      await store.close();
      await pool.end();
    },
  };
}

/** Turns an error of a command into a CliError: a missing table or a lost connection is exit 3, anything else exit 4. */
export function commandError(error: unknown, table: TableName): CliError {
  if (error instanceof CliError) return error;
  const sqlstate = sqlstateOf(error);
  if (sqlstate !== undefined && TABLE_MISSING_SQLSTATES.has(sqlstate)) {
    return new CliError(
      'table_missing',
      `the records table ${qualified(table)} does not exist: run \`koa-idempotency migrate\` (with the same --schema/--table)`,
      EXIT.DATABASE_UNAVAILABLE,
      { cause: error },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  const code = errorCode(error);
  if ((sqlstate !== undefined && CONNECTION_LOST.test(sqlstate)) || (code !== undefined && SOCKET_ERRORS.has(code))) {
    return new CliError('unreachable', `lost the connection to the Postgres server: ${message || String(code)}`, EXIT.DATABASE_UNAVAILABLE, { cause: error });
  }
  return new CliError('failed', sqlstate ? `${message} (SQLSTATE ${sqlstate})` : message, EXIT.FAILED, { cause: error });
}

function databaseUrl(raw: string | undefined): URL {
  if (raw === undefined || raw === '') {
    throw new CliError('database_url_missing', 'DATABASE_URL is not set (expected postgres://user:password@host:5432/database)', EXIT.USAGE);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError('database_url_invalid', 'DATABASE_URL is not a valid URL (expected postgres://user:password@host:5432/database)', EXIT.USAGE);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new CliError(
      'database_url_invalid',
      `DATABASE_URL must start with postgres:// or postgresql://; got ${url.protocol}// (expected postgres://user:password@host:5432/database)`,
      EXIT.USAGE,
    );
  }
  return url;
}

function describeTarget(url: URL): string {
  return `${url.hostname || 'localhost'}:${url.port || '5432'}${url.pathname.length > 1 ? url.pathname : ''}`;
}

function connectionError(error: unknown, target: string): CliError {
  const sqlstate = sqlstateOf(error);
  const reason = error instanceof Error ? error.message : String(error);
  // Class 28: invalid authorization specification (wrong password, no pg_hba.conf entry).
  if (sqlstate?.startsWith('28')) {
    return new CliError('login_refused', `the server at ${target} refused the login: ${reason}`, EXIT.DATABASE_UNAVAILABLE, { cause: error });
  }
  if (sqlstate === '3D000') {
    return new CliError('database_missing', `the server at ${target} has no such database: ${reason}`, EXIT.DATABASE_UNAVAILABLE, { cause: error });
  }
  const detail = reason || errorCode(error) || 'no answer';
  return new CliError('unreachable', `cannot reach the Postgres server at ${target}: ${detail}`, EXIT.DATABASE_UNAVAILABLE, { cause: error });
}
