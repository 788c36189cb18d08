import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DATABASE_URL, uniqueSchema } from '../helpers/databases.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** Runs `koa-idempotency` from source as a child process, the way an operator (or a script) runs it. */
function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') {
        const failure: Error = error; // it did not run (spawn failed or timed out): not an exit code
        return reject(failure);
      }
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
    });
  });
}

/**
 * The executable around `runCli`: arguments from argv, the environment, output flushed before the exit code.
 * Every command's behaviour is tested in process, through runCli, in test/cli-*.test.ts.
 */
describe('the koa-idempotency executable', () => {
  it('exits 2 on a usage error, with the one JSON document --json promises on stdout', async () => {
    const run = await cli(['sweep', '--batch-size', 'many', '--json']);
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: 'usage' } });
  });

  it('exits 3 when the table is missing on the server at DATABASE_URL, its report flushed before it ends', async () => {
    const run = await cli(['stats', '--schema', uniqueSchema('cli_binary'), '--json'], { ...process.env, DATABASE_URL });
    expect(run.code).toBe(3);
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: 'table_missing' } });
  });
});
