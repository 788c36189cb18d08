import { IdempotencyConfigError } from '../../errors.js';
import { quoteIdentifier } from '../../store/identifiers.js';
import { defaultPartition } from '../../store/partitioned-schema.js';
import { qualified } from '../../store/schema.js';
import type { Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { CliError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import { resolvePartitioning, timePartitions } from '../../store/partition-maintenance.js';
import type { CommandResult } from './result.js';

type Migrate = Extract<Invocation, { command: 'migrate' }>;

/**
 * Runs the store's migration: every statement is IF NOT EXISTS, so a second run changes nothing. A table
 * is never converted between plain and partitioned, so `--partitioned` must match an existing table.
 */
export async function migrate(invocation: Migrate, connection: Connection): Promise<CommandResult> {
  const { schema, table } = invocation.table;
  const partitioned = invocation.partitioning !== undefined;
  if (connection.layout !== 'missing' && (connection.layout === 'partitioned') !== partitioned) {
    throw new CliError('layout_mismatch', layoutMismatch(qualified(invocation.table), connection.layout === 'partitioned'), EXIT.USAGE);
  }
  const startedMs = performance.now();
  await connection.store.migrate({ distribute: invocation.distribute }).catch((error: unknown) => {
    // Without Citus, or a table distributed by the other column: the flag does not fit this database.
    if (invocation.distribute && error instanceof IdempotencyConfigError) throw new CliError('distribution_refused', error.message, EXIT.USAGE, { cause: error });
    throw error;
  });
  const durationMs = Math.round(performance.now() - startedMs);
  const distributedBy = invocation.distribute && (invocation.distribute.column ?? 'scope');
  const upToDate =
    `${qualified(invocation.table)} is up to date on ${connection.target} (${durationMs} ms)\n` + (distributedBy ? `distributed by ${distributedBy} (Citus)\n` : '');
  const distributed = distributedBy ? { distributedBy } : {};
  if (!invocation.partitioning) {
    return { exitCode: EXIT.OK, json: { migrated: true, schema, table, partitioned: false, ...distributed, durationMs }, text: upToDate };
  }

  const { intervalSeconds, premadePartitions } = resolvePartitioning(connection.partitioning)!;
  const partitions = await timePartitions(connection.db, invocation.table);
  const catchAll = defaultPartition(invocation.table).table;
  const last = partitions.at(-1);
  return {
    exitCode: EXIT.OK,
    json: {
      migrated: true,
      schema,
      table,
      partitioned: true,
      ...distributed,
      partitionIntervalSeconds: intervalSeconds,
      premadePartitions,
      partitions: partitions.map((partition) => partition.name),
      defaultPartition: catchAll,
      durationMs,
    },
    text:
      upToDate +
      `partitioned by created_at: ${partitions.length} partition${partitions.length === 1 ? '' : 's'} of ${intervalSeconds} s` +
      (last ? ` up to ${new Date(last.toSeconds * 1_000).toISOString()}` : '') +
      `, and the catch-all ${quoteIdentifier(catchAll)}\n`,
  };
}

function layoutMismatch(table: string, partitioned: boolean): string {
  return partitioned
    ? `the table ${table} is partitioned: run \`koa-idempotency migrate --partitioned\` to keep it up to date ` +
        `(a table is never converted; to switch to a plain table, migrate a new --table)`
    : `the table ${table} exists and is not partitioned: \`migrate --partitioned\` never converts a table; ` +
        `run \`koa-idempotency migrate\` without --partitioned, or migrate a new --table to switch`;
}
