import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/run.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';

/**
 * `koa-idempotency migrate --distribute` (docs/scale-out.md): on a database without the citus extension (the
 * Postgres server of the test run) it exits 2 and names what is missing, before creating anything; its flags
 * are validated as migrate() validates its options. On a Citus coordinator, test/distribution.test.ts covers it.
 */

const schema = uniqueSchema('cli_distribute');
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });

afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

/** The CLI in this process through `runCli` (as test/helpers/cli-run.ts runs it): arguments, exit code and JSON output. */
async function cli(args: string[]): Promise<{ code: number; json: any }> {
  let stdout = '';
  const code = await runCli([...args, '--json'], { ...process.env, DATABASE_URL }, { stdout: (text) => (stdout += text), stderr: () => undefined });
  return { code, json: JSON.parse(stdout) };
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
