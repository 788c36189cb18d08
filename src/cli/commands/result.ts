import type { ExitCode } from '../exit-codes.js';

/** What a command prints (one of the two, by `--json`) and how the process exits. */
export interface CommandResult {
  exitCode: ExitCode;
  json: unknown;
  text: string;
}
