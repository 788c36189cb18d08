import { IdempotencyConfigError } from '../errors.js';
import { assertIdentifier } from './identifiers.js';
import { qualified, type TableName } from './schema.js';
import type { SqlQueryable } from './sql-database.js';

/**
 * The records table distributed with Citus (docs/scale-out.md): `create_distributed_table` run by
 * `migrate({ distribute })` once the table exists. Idempotent: a table already distributed by the same column
 * is left as it is; one distributed by the other column is refused, never moved.
 */
export interface DistributionOptions {
  /**
   * The distribution column. `'scope'` keeps a tenant's records on the node of its business rows (co-located
   * by tenant), so a transactional claim stays a single-node transaction; `'key'` spreads one hot tenant.
   * @default 'scope'
   */
  column?: 'scope' | 'key';
  /**
   * The distributed table to co-locate with (`table` or `schema.table`), as `create_distributed_table`'s
   * `colocate_with`: its distribution column must have the type of `column` (text).
   * @default Citus's default co-location group for a text column
   */
  colocateWith?: string;
}

/** Options of PostgresStore#migrate(). */
export interface MigrateOptions {
  /**
   * Distribute the table with Citus once it exists: `true` by `scope`, or the column and co-location
   * (DistributionOptions). Needs the citus extension; idempotent.
   * @default false (a local table)
   */
  distribute?: boolean | DistributionOptions;
}

/** What the distribution step found: it distributed the table, or the table already was. */
export type DistributionOutcome = 'distributed' | 'already_distributed';

export const DISTRIBUTION_COLUMNS = ['scope', 'key'] as const;

export interface ResolvedDistribution {
  column: 'scope' | 'key';
  colocateWith: string;
}

/** Validated options, at the call (a TypeError before any SQL), as every option of the store; undefined: none. */
export function resolveDistribution(options: MigrateOptions['distribute']): ResolvedDistribution | undefined {
  if (options === undefined || options === false) return undefined;
  // Checked, not trusted to the type: from JavaScript, 'yes' or 1 would otherwise distribute by scope, and null throw a bare TypeError.
  if (options !== true && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw new IdempotencyConfigError(`distribute must be true, false or { column, colocateWith }; got ${JSON.stringify(options)}`);
  }
  const { column = 'scope', colocateWith } = options === true ? {} : options;
  if (!(DISTRIBUTION_COLUMNS as readonly string[]).includes(column)) {
    throw new IdempotencyConfigError(`distribute.column must be 'scope' or 'key'; got ${JSON.stringify(column)}`);
  }
  if (colocateWith === undefined) return { column, colocateWith: 'default' };
  const parts = typeof colocateWith === 'string' ? colocateWith.split('.') : [];
  if (parts.length < 1 || parts.length > 2)
    throw new IdempotencyConfigError(`distribute.colocateWith must be a table or schema.table; got ${JSON.stringify(colocateWith)}`);
  return { column, colocateWith: parts.map((part) => assertIdentifier(part, 'distribute.colocateWith')).join('.') };
}

/** Refuses, before anything is created, to distribute a table where Citus is not installed. */
export async function assertCitus(db: SqlQueryable, name: TableName): Promise<void> {
  const { rows } = await db.query<{ version: string }>(`SELECT extversion AS version FROM pg_extension WHERE extname = 'citus'`);
  if (rows.length > 0) return;
  throw new IdempotencyConfigError(
    `cannot distribute ${qualified(name)}: the citus extension is not installed in this database (CREATE EXTENSION citus on the ` +
      'coordinator, see docs/scale-out.md), or migrate without the distribute option to keep a local table',
  );
}

/**
 * Distributes the records table by `column` (Citus checked by assertCitus). `afterDistribution` runs once the
 * table is distributed (a partitioned table's claim function, which Citus sends to the workers only when it is
 * created after the table it returns rows of is distributed).
 */
export async function distributeTable(
  db: SqlQueryable,
  name: TableName,
  { column, colocateWith }: ResolvedDistribution,
  afterDistribution: string | undefined,
): Promise<DistributionOutcome> {
  const table = qualified(name);
  const { rows } = await db.query<{ column: string }>(
    `SELECT column_to_column_name(logicalrelid, partkey) AS column FROM pg_dist_partition WHERE logicalrelid = $1::regclass`,
    [table],
  );
  const current = rows[0]?.column;
  if (current === column) return 'already_distributed';
  if (current !== undefined) {
    throw new IdempotencyConfigError(
      `${table} is already distributed by ${current}, not ${column}: migrate() never moves a distributed table ` +
        '(Citus alter_distributed_table does, see docs/scale-out.md)',
    );
  }
  await db.query(`SELECT create_distributed_table($1::regclass, $2::text, colocate_with => $3::text)`, [table, column, colocateWith]);
  if (afterDistribution !== undefined) await db.query(afterDistribution);
  return 'distributed';
}
