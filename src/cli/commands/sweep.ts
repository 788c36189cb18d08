import { resolvePartitioning } from '../../store/partition-maintenance.js';
import { qualified } from '../../store/schema.js';
import type { Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { usageError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import type { CommandResult } from './result.js';

type Sweep = Extract<Invocation, { command: 'sweep' }>;

/**
 * Deletes expired records through the store's own bounded, SKIP LOCKED batches. On a partitioned table the
 * store first creates the partitions ahead and drops those whose records have all expired (each step waits
 * for its table lock briefly, and what it could not do is skipped until the next sweep), then sweeps the
 * catch-all partition row by row. `deleted` counts both: the records of the dropped partitions and the rows.
 */
export async function sweep(invocation: Sweep, connection: Connection): Promise<CommandResult> {
  const { intervalSeconds, premadePartitions } = invocation.partitions;
  if (connection.layout === 'plain' && (intervalSeconds !== undefined || premadePartitions !== undefined)) {
    const flag = intervalSeconds !== undefined ? 'partition-interval-seconds' : 'premade-partitions';
    throw usageError(`--${flag} applies to a partitioned table, and ${qualified(invocation.table)} is not partitioned`);
  }
  const startedMs = performance.now();
  const { deleted, partitions: report } = await connection.store.sweepReport({ batchSize: invocation.batchSize, maxBatches: invocation.maxBatches });
  const durationMs = Math.round(performance.now() - startedMs);
  const summary = `deleted ${deleted} expired record${deleted === 1 ? '' : 's'} in ${durationMs} ms\n`;
  if (!report) return { exitCode: EXIT.OK, json: { deleted, durationMs }, text: summary };

  // A report comes from a partitioned table only: its store was built with partitioning.
  const interval = resolvePartitioning(connection.partitioning)!.intervalSeconds;
  const skipped = report.skipped.length > 0 ? ` (${report.skipped.join(', ')}: left to the next sweep)` : '';
  return {
    exitCode: EXIT.OK,
    json: { deleted, partitions: { intervalSeconds: interval, ...report }, durationMs },
    text:
      summary +
      `partitions of ${interval} s: ${report.created.length} created, ${report.dropped.length} dropped ` +
      `(${report.droppedRecords} record${report.droppedRecords === 1 ? '' : 's'}), ${report.skipped.length} skipped${skipped}\n`,
  };
}
