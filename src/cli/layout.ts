import type pg from 'pg';
import { DEFAULT_PARTITION_INTERVAL_SECONDS, DEFAULT_PREMADE_PARTITIONS, type PartitioningOptions } from '../store/partition-maintenance.js';
import { qualified, type TableName } from '../store/schema.js';
import type { Invocation, PartitionFlags } from './arguments.js';

/**
 * Whether the records table is partitioned, read from the catalog, so that an operator never repeats
 * `--partitioned` after `migrate`: the store of every other command is built to match the table.
 */
export type TableLayout = 'plain' | 'partitioned' | 'missing';

type Queryable = Pick<pg.Pool, 'query'>;

export async function tableLayout(db: Queryable, table: TableName): Promise<TableLayout> {
  const { rows } = await db.query<{ relkind: string | null }>(
    `SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS relkind`,
    [qualified(table)],
  );
  const kind = rows[0]?.relkind;
  if (kind === null || kind === undefined) return 'missing';
  return kind === 'p' ? 'partitioned' : 'plain';
}

/** A time partition the store made (`<table>_p<start epoch seconds>`), with its range in epoch seconds. */
export interface TimePartition {
  name: string;
  fromSeconds: number;
  toSeconds: number;
}

/** The store's time partitions of the table, oldest first; the catch-all and foreign partitions are left out. */
export async function timePartitions(db: Queryable, table: TableName): Promise<TimePartition[]> {
  // The bounds are printed and parsed back in the same session, so DateStyle and TimeZone cannot skew them.
  const { rows } = await db.query<{ name: string; from_seconds: string | null; to_seconds: string | null }>(
    `SELECT c.relname AS name,
  extract(epoch FROM b.bound[1]::timestamptz)::text AS from_seconds,
  extract(epoch FROM b.bound[2]::timestamptz)::text AS to_seconds
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS bound) b
WHERE i.inhparent = to_regclass($1)`,
    [qualified(table)],
  );
  const managed = new RegExp(`^${table.table}_p(\\d+)$`); // the table name is a validated identifier: no metacharacters
  return rows
    .filter((row) => managed.test(row.name) && row.from_seconds !== null && row.to_seconds !== null)
    .map((row) => ({ name: row.name, fromSeconds: Number(row.from_seconds), toSeconds: Number(row.to_seconds) }))
    .sort((a, b) => a.fromSeconds - b.fromSeconds);
}

/** The range of the newest time partition: the interval the table was last maintained with. */
export function newestIntervalSeconds(partitions: readonly TimePartition[]): number | undefined {
  const newest = partitions.at(-1);
  if (!newest) return undefined;
  const seconds = newest.toSeconds - newest.fromSeconds;
  return Number.isSafeInteger(seconds) && seconds > 0 ? seconds : undefined;
}

/**
 * The partitioning of a store on a partitioned table: each flag as given, else the interval of the
 * table's newest time partition (so that `sweep` and a repeated `migrate --partitioned` keep the interval
 * the table was created with), else the library's defaults.
 */
export async function partitioningFor(db: Queryable, table: TableName, flags: PartitionFlags): Promise<PartitionSettings> {
  const intervalSeconds =
    flags.intervalSeconds ?? newestIntervalSeconds(await timePartitions(db, table)) ?? DEFAULT_PARTITION_INTERVAL_SECONDS;
  return { intervalSeconds, premadePartitions: flags.premadePartitions ?? DEFAULT_PREMADE_PARTITIONS };
}

export type PartitionSettings = Required<Pick<PartitioningOptions, 'intervalSeconds' | 'premadePartitions'>>;

/** The interval and premade count a store was built with (`true` takes the library's defaults). */
export function partitionSettings(partitioning: PartitioningOptions | boolean): PartitionSettings {
  const options = typeof partitioning === 'object' ? partitioning : {};
  return {
    intervalSeconds: options.intervalSeconds ?? DEFAULT_PARTITION_INTERVAL_SECONDS,
    premadePartitions: options.premadePartitions ?? DEFAULT_PREMADE_PARTITIONS,
  };
}

/** The `partitioning` option of the store a command runs on: `migrate` follows its flags, the others the table. */
export async function storePartitioning(
  invocation: Exclude<Invocation, { command: 'help' }>,
  layout: TableLayout,
  db: Queryable,
): Promise<PartitioningOptions | boolean> {
  switch (invocation.command) {
    case 'migrate':
      return invocation.partitioning ? partitioningFor(db, invocation.table, invocation.partitioning) : false;
    case 'sweep':
      return layout === 'partitioned' ? partitioningFor(db, invocation.table, invocation.partitions) : false;
    case 'inspect':
    case 'stats':
      // They never create or drop partitions: the interval does not matter.
      return layout === 'partitioned';
  }
}
