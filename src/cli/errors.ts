import { IdempotencyError } from '../errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';

/**
 * A failure the CLI reports and exits on. `code` is a stable machine-readable name (printed in `--json`
 * output); `exitCode` is what the process returns.
 */
export class CliError extends IdempotencyError {
  override name = 'CliError';

  constructor(
    override readonly code: CliErrorCode,
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type CliErrorCode =
  | 'usage'
  | 'not_found'
  | 'in_progress'
  | 'database_url_missing'
  | 'database_url_invalid'
  | 'unreachable'
  | 'login_refused'
  | 'database_missing'
  | 'table_missing'
  | 'layout_mismatch'
  | 'distribution_refused'
  | 'failed';

export function usageError(message: string): CliError {
  return new CliError('usage', message, EXIT.USAGE);
}
