import type { Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { EXIT } from '../exit-codes.js';
import type { CommandResult } from './result.js';

type Migrate = Extract<Invocation, { command: 'migrate' }>;

/** Runs the store's migration: every statement is IF NOT EXISTS, so a second run changes nothing. */
export async function migrate(invocation: Migrate, connection: Connection): Promise<CommandResult> {
  const startedMs = performance.now();
  await connection.store.migrate();
  const durationMs = Math.round(performance.now() - startedMs);
  const { schema, table } = invocation.table;
  return {
    exitCode: EXIT.OK,
    json: { migrated: true, schema, table, durationMs },
    text: `"${schema}"."${table}" is up to date on ${connection.target} (${durationMs} ms)\n`,
  };
}
