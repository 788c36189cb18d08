import { RECORD_STATUS, type StoreStats } from '../../store/types.js';
import type { Connection } from '../connection.js';
import { EXIT } from '../exit-codes.js';
import { formatDuration, formatTable } from '../format.js';
import type { CommandResult } from './result.js';

/**
 * Records by status. For in-progress records the age of the oldest one is the longest-running (or
 * stuck) operation, and lapsed leases are operations whose owner stopped renewing: a crash or a hang.
 */
export async function stats(connection: Connection): Promise<CommandResult> {
  const found = await connection.store.stats();
  const byStatus = Object.values(RECORD_STATUS).map(
    (status): StoreStats => found.find((row) => row.status === status) ?? { status, records: 0, oldestAgeMs: 0, lapsedLeases: 0 },
  );
  const inProgress = byStatus.find((row) => row.status === RECORD_STATUS.IN_PROGRESS)!;
  const json = {
    totalRecords: byStatus.reduce((sum, row) => sum + row.records, 0),
    byStatus: byStatus.map((row) => ({ ...row, oldestAgeMs: Math.round(row.oldestAgeMs) })),
    oldestInProgressAgeMs: inProgress.records > 0 ? Math.round(inProgress.oldestAgeMs) : null,
    lapsedLeases: inProgress.lapsedLeases,
  };
  const table = formatTable(
    ['status', 'records', 'oldest', 'lapsed leases'],
    byStatus.map((row) => [
      row.status,
      String(row.records),
      row.records > 0 ? formatDuration(row.oldestAgeMs) : '-',
      row.status === RECORD_STATUS.IN_PROGRESS ? String(row.lapsedLeases) : '-',
    ]),
    ['left', 'right', 'right', 'right'],
  );
  return { exitCode: EXIT.OK, json, text: table };
}
