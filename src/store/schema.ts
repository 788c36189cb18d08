import { quoteIdentifier } from './identifiers.js';
import type { SqlQueryable } from './sql-database.js';

/** Where the records live. Both names are validated identifiers (see identifiers.ts). */
export interface TableName {
  schema: string;
  table: string;
}

export const DEFAULT_SCHEMA = 'public';
export const DEFAULT_TABLE = 'idempotency_records';

export function qualified({ schema, table }: TableName): string {
  return `${quoteIdentifier(schema)}.${quoteIdentifier(table)}`;
}

/**
 * The schema, as one idempotent script (every statement IF NOT EXISTS). `sql/schema.sql` is this
 * script for the default names; a test keeps the two equal.
 *
 * - (scope, key) is the primary key: the claim's ON CONFLICT target, and the only lookup path.
 * - `fence` is random for a new record and grows by one at each takeover (fences.ts): a zombie worker's
 *   completion never matches a newer owner, and no sequence is called on the hot path.
 * - `expires_at` is indexed for the sweeper by a BRIN index, and pages are filled to FILLFACTOR_PERCENT by
 *   inserts: the completion, which rewrites `expires_at` (the TTL counts from it), changes no B-tree column and
 *   finds room on its page, so it is a HOT update (PostgreSQL 16 and later; a BRIN column blocks HOT before
 *   that): no new index entries, about half the buffers of a cold one (docs/performance.md). A table created
 *   before keeps its B-tree under the same name; docs/performance.md says how to swap it without a lock.
 */
export function schemaSql(name: TableName): string {
  const table = qualified(name);
  return `CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(name.schema)};

CREATE TABLE IF NOT EXISTS ${table} (
${recordColumnsSql()},
  PRIMARY KEY (scope, key)
) WITH (fillfactor = ${FILLFACTOR_PERCENT});

CREATE INDEX IF NOT EXISTS ${quoteIdentifier(`${name.table}_expires_at_idx`)} ON ${table} USING brin (expires_at);
`;
}

/**
 * How full inserts leave a page of the plain table: the rest is for the completed versions of its rows (a
 * completion adds the response), which a HOT update must place on the same page.
 */
const FILLFACTOR_PERCENT = 80;

/** The record's columns, shared by the plain and the partitioned table. */
export function recordColumnsSql(): string {
  return `  scope               text        NOT NULL,
  key                 text        NOT NULL,
  status              text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
  fingerprint         text        NOT NULL,
  fingerprint_version smallint    NOT NULL,
  fence               bigint      NOT NULL,
  attempt             integer     NOT NULL DEFAULT 1,
  steps               jsonb       NOT NULL DEFAULT '{}'::jsonb,
  replayable          boolean,
  response_status     smallint,
  response_headers    jsonb,
  response_body       bytea,
  correlation_id      text,
  traceparent         text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  completed_at        timestamptz,
  lease_expires_at    timestamptz,
  expires_at          timestamptz NOT NULL`;
}

/**
 * The advisory lock key of one (scope, key) of one table, as a SQL expression over two text expressions.
 * Transactional claims take it so that a concurrent duplicate can be turned away without waiting.
 */
export function keyLockExpression(name: TableName, scope: string, key: string): string {
  const table = qualified(name).replaceAll("'", "''");
  return `hashtextextended('${table}' || chr(10) || ${scope} || chr(10) || ${key}, 0)`;
}

/**
 * The lock a waiting duplicate holds, shared, on the listening session while it waits for one key, as a SQL
 * expression over two text expressions. A completion notifies only when it cannot take this lock (see
 * primitives/notify-waiters.ts). It is a two-integer advisory lock, a space apart from keyLockExpression's
 * single bigint; two keys with the same 32-bit hash only cost a needless notification.
 */
export function waiterLockExpression(name: TableName, scope: string, key: string): string {
  const table = qualified(name).replaceAll("'", "''");
  return `hashtext('${table}'), hashtext(${scope} || chr(10) || ${key})`;
}

/** What the catalog holds under a table's name: a plain table, a partitioned one, or nothing yet. */
export type TableLayout = 'plain' | 'partitioned' | 'missing';

export async function tableLayout(db: SqlQueryable, name: TableName): Promise<TableLayout> {
  const { rows } = await db.query<{ relkind: string | null }>(`SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS relkind`, [qualified(name)]);
  const kind = rows[0]?.relkind;
  if (kind === null || kind === undefined) return 'missing';
  return kind === 'p' ? 'partitioned' : 'plain';
}
