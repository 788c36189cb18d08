import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';

/**
 * `koa-idempotency migrate --distribute` (docs/scale-out.md): on a database without the citus extension (the
 * Postgres server of the test run) it exits 2 and names what is missing, before creating anything; its flags
 * are validated as migrate() validates its options. On a Citus coordinator, test/distribution.test.ts covers it.
 */

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const schema = uniqueSchema('cli_distribute');
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });

afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

function cli(args: string[]): Promise<{ code: number; json: any }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args, '--json'], { env: { ...process.env, DATABASE_URL }, timeout: 60_000 }, (error, stdout) => {
      if (error && typeof error.code !== 'number') {
        const failure: Error = error; // the CLI did not run (spawn failed or timed out): not an exit code
        return reject(failure);
      }
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, json: JSON.parse(stdout) });
    });
  });
}

describe('koa-idempotency migrate --distribute', () => {
  it('exits 2 (distribution_refused) without the citus extension, naming it, and creates nothing', async () => {
    const { rows } = await pool.query<{ citus: boolean }>(`SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus`);
    expect(rows[0]!.citus).toBe(false);
    const run = await cli(['migrate', '--schema', schema, '--distribute']);
    expect(run.code).toBe(2);
    expect(run.json.error).toEqual({ code: 'distribution_refused', message: expect.stringContaining('the citus extension is not installed') });
    const { rows: table } = await pool.query<{ missing: boolean }>(`SELECT to_regclass($1) IS NULL AS missing`, [`"${schema}".idempotency_records`]);
    expect(table[0]!.missing).toBe(true);
  });

  it.each([
    [['--distribute', '--distribution-column', 'tenant'], '--distribution-column must be'],
    [['--colocate-with', 'orders'], '--colocate-with needs --distribute'],
    [['--distribute', '--print-sql'], 'no --print-sql script'],
  ])('refuses %j with a usage error (exit 2)', async (flags, message) => {
    const run = await cli(['migrate', '--schema', schema, ...flags]);
    expect(run.code).toBe(2);
    expect(run.json.error).toEqual({ code: 'usage', message: expect.stringContaining(message) });
  });
});
