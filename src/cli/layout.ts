import {
  DEFAULT_PARTITION_INTERVAL_SECONDS,
  DEFAULT_PREMADE_PARTITIONS,
  timePartitions,
  type PartitioningOptions,
  type TimePartition,
} from '../store/partition-maintenance.js';
import type { TableLayout, TableName } from '../store/schema.js';
import type { SqlQueryable } from '../store/sql-database.js';
import type { Invocation, PartitionFlags } from './arguments.js';

/*
 * Whether the records table is partitioned is read from the catalog (store/schema.ts `tableLayout`), so
 * that an operator never repeats `--partitioned` after `migrate`: the store of every other command is
 * built to match the table.
 */

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
export async function partitioningFor(db: SqlQueryable, table: TableName, flags: PartitionFlags): Promise<PartitionSettings> {
  const intervalSeconds = flags.intervalSeconds ?? newestIntervalSeconds(await timePartitions(db, table)) ?? DEFAULT_PARTITION_INTERVAL_SECONDS;
  return { intervalSeconds, premadePartitions: flags.premadePartitions ?? DEFAULT_PREMADE_PARTITIONS };
}

export type PartitionSettings = Required<Pick<PartitioningOptions, 'intervalSeconds' | 'premadePartitions'>>;

/** The `partitioning` option of the store a command runs on: `migrate` follows its flags, the others the table. */
export async function storePartitioning(
  invocation: Exclude<Invocation, { command: 'help' }>,
  layout: TableLayout,
  db: SqlQueryable,
): Promise<PartitioningOptions | boolean> {
  switch (invocation.command) {
    case 'migrate':
      return invocation.partitioning ? partitioningFor(db, invocation.table, invocation.partitioning) : false;
    case 'sweep':
      return layout === 'partitioned' ? partitioningFor(db, invocation.table, invocation.partitions) : false;
    case 'inspect':
    case 'stats':
    case 'forget':
      // They never create or drop partitions: the interval does not matter.
      return layout === 'partitioned';
  }
}
