import { runCli } from '../../src/cli/run.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, for `--json` runs. */
  json: any;
}

/**
 * Runs the CLI in this process through `runCli`, the function `koa-idempotency` (src/cli/main.ts) is a shell
 * around: the same arguments, environment, output and exit code, without a Node start per run.
 * test/system/cli-binary.test.ts runs the real executable.
 */
export async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete cliEnv[name];
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, cliEnv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code, stdout, stderr, json };
}
