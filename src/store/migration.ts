import { IdempotencyConfigError } from '../errors.js';
import { assertIdentifier } from './identifiers.js';
import { partitionedSchemaStatements } from './partitioned-schema.js';
import { DEFAULT_SCHEMA, DEFAULT_TABLE, qualified, schemaSql, tableLayout, type TableName } from './schema.js';
import type { SqlQueryable } from './sql-database.js';

/** Which records table a migration creates: its validated name, and whether it is partitioned by time. */
export interface MigrationTarget {
  /** Schema of the records table (validated identifier). @default 'public' */
  schema?: string;
  /** Name of the records table (validated identifier). @default 'idempotency_records' */
  table?: string;
  /** A table partitioned by creation time (any value but `false`/`undefined`, as PostgresStore's option). @default false */
  partitioning?: unknown;
}

/**
 * The migration script of a records table, for teams that apply SQL with their own tool: what
 * `PostgresStore#migrate()` runs, without a connection. Every statement is idempotent (IF NOT EXISTS,
 * CREATE OR REPLACE). A partitioned table gets its time partitions from `sweep()`; until then records go to
 * its catch-all partition.
 */
export function migrationSql(target: MigrationTarget = {}): string {
  const name = tableNameOf(target);
  return isPartitioned(target) ? `${partitionedSchemaStatements(name).join(';\n\n')};\n` : schemaSql(name);
}

/** The migration as separate statements, in order (a function body holds semicolons: it cannot be split on them). */
export function migrationStatements(name: TableName, partitioned: boolean): string[] {
  if (partitioned) return partitionedSchemaStatements(name);
  return schemaSql(name)
    .split(/;\s*\n/)
    .filter((statement) => statement.trim());
}

/** A table is never converted between plain and partitioned: say so instead of failing at the first claim. */
export async function assertTableKind(db: SqlQueryable, name: TableName, partitioned: boolean): Promise<void> {
  const layout = await tableLayout(db, name);
  if (layout === 'missing' || (layout === 'partitioned') === partitioned) return;
  throw new IdempotencyConfigError(
    `the table ${qualified(name)} exists and is ${layout === 'partitioned' ? '' : 'not '}partitioned, but the store was built ` +
      `${partitioned ? 'with' : 'without'} the \`partitioning\` option: a table is never converted; use a new \`table\` name to switch`,
  );
}

export function tableNameOf(target: Pick<MigrationTarget, 'schema' | 'table'>): TableName {
  return { schema: assertIdentifier(target.schema ?? DEFAULT_SCHEMA, 'schema'), table: assertIdentifier(target.table ?? DEFAULT_TABLE, 'table') };
}

/** The one reading of the `partitioning` option as "partitioned or not". */
export function isPartitioned(target: Pick<MigrationTarget, 'partitioning'>): boolean {
  return target.partitioning !== undefined && target.partitioning !== false;
}
