import { migrationSql } from '../store/migration.js';
import { parseInvocation, usageText, type Invocation } from './arguments.js';
import { forget } from './commands/forget.js';
import { inspect } from './commands/inspect.js';
import { migrate } from './commands/migrate.js';
import type { CommandResult } from './commands/result.js';
import { stats } from './commands/stats.js';
import { sweep } from './commands/sweep.js';
import { commandError, connect, type Connection } from './connection.js';
import { CliError } from './errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';
import { storePartitioning } from './layout.js';

export interface CliOutput {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/**
 * The whole CLI as a function of its arguments and environment: parse, connect, run one command, print.
 * With `--json`, stdout gets exactly one JSON document, an error included; otherwise errors go to stderr.
 */
export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv, output: CliOutput): Promise<ExitCode> {
  let invocation: Invocation;
  try {
    invocation = parseInvocation(argv, env);
  } catch (error) {
    if (!(error instanceof CliError)) throw error;
    return report(error, argv.includes('--json'), output, true);
  }
  if (invocation.command === 'help') {
    output.stdout(invocation.json ? toJson({ usage: usageText(invocation.topic) }) : usageText(invocation.topic));
    return EXIT.OK;
  }
  if (invocation.command === 'migrate' && invocation.printSql) {
    const sql = printedMigration(invocation);
    output.stdout(invocation.json ? toJson({ sql }) : sql);
    return EXIT.OK;
  }

  let connection: Connection;
  try {
    connection = await connect(env, invocation.table, (layout, db) => storePartitioning(invocation, layout, db));
  } catch (error) {
    return report(commandError(error, invocation.table), invocation.json, output, false);
  }
  try {
    const result = await execute(invocation, connection, output);
    output.stdout(invocation.json ? toJson(result.json) : result.text);
    return result.exitCode;
  } catch (error) {
    return report(commandError(error, invocation.table), invocation.json, output, false);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

function execute(invocation: Exclude<Invocation, { command: 'help' }>, connection: Connection, output: CliOutput): Promise<CommandResult> {
  switch (invocation.command) {
    case 'migrate':
      return migrate(invocation, connection);
    case 'sweep':
      return sweep(invocation, connection);
    case 'inspect':
      return inspect(invocation, connection);
    case 'stats':
      return stats(connection);
    case 'forget':
      // The audit line goes to stderr, so that stdout stays the one document `--json` promises.
      return forget(invocation, connection, output.stderr);
  }
}

/** The store's own migration script (what `migrate` runs), with no connection. */
function printedMigration(invocation: Extract<Invocation, { command: 'migrate' }>): string {
  const { schema, table } = invocation.table;
  return migrationSql({ schema, table, partitioning: invocation.partitioning !== undefined });
}

function report(error: CliError, json: boolean, output: CliOutput, showUsage: boolean): ExitCode {
  if (json) {
    output.stdout(toJson({ error: { code: error.code, message: error.message } }));
  } else {
    output.stderr(`koa-idempotency: ${error.message}\n`);
    if (showUsage) output.stderr(`Run \`koa-idempotency --help\` for usage.\n`);
  }
  return error.exitCode;
}

function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}
