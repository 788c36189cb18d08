import type { Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { EXIT } from '../exit-codes.js';
import type { CommandResult } from './result.js';

type Sweep = Extract<Invocation, { command: 'sweep' }>;

/** Deletes expired records through the store's own bounded, SKIP LOCKED batches. */
export async function sweep(invocation: Sweep, connection: Connection): Promise<CommandResult> {
  const startedMs = performance.now();
  const deleted = await connection.store.sweep({ batchSize: invocation.batchSize, maxBatches: invocation.maxBatches });
  const durationMs = Math.round(performance.now() - startedMs);
  return {
    exitCode: EXIT.OK,
    json: { deleted, durationMs },
    text: `deleted ${deleted} expired record${deleted === 1 ? '' : 's'} in ${durationMs} ms\n`,
  };
}
