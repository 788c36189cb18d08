import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { migrationSql } from '../src/entries/postgres.js';
import { cli } from './helpers/cli-run.js';

/** The CLI without a database: usage and help, argument and DATABASE_URL errors, printed migration SQL, the bin it ships as. */
describe.concurrent('koa-idempotency CLI without a database', () => {
  it('prints the usage with the exit codes on --help and exits 0', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: koa-idempotency <command>');
    for (const command of ['migrate', 'sweep', 'inspect', 'stats', 'forget']) expect(run.stdout).toContain(command);
    expect(run.stdout).toContain('Exit codes: 0 ok, 1 inspect or forget found no record, 2 usage error');
  });

  it('prints the help of one command', async () => {
    const run = await cli(['inspect', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: koa-idempotency inspect (--key K [--scope S] | --instance URN)');
  });

  it('documents the partitioning flags, and where sweep takes the interval from', async () => {
    const [migrate, sweep] = await Promise.all([cli(['migrate', '--help']), cli(['sweep', '--help'])]);
    expect(migrate.stdout).toContain('Usage: koa-idempotency migrate [--print-sql] [--partitioned [--partition-interval-seconds N] [--premade-partitions N]]');
    expect(sweep.stdout).toContain('Usage: koa-idempotency sweep [--batch-size N] [--max-batches N] [--partition-interval-seconds N] [--premade-partitions N]');
    expect(sweep.stdout).toMatch(/default: the range of the table's newest partition/);
  });

  it.each([
    [['frob'], /unknown command "frob"/],
    [[], /a command is required/],
    [['stats', '--key', 'k'], /stats does not take --key/],
    [['stats', '--bogus'], /Unknown option '--bogus'/],
    [['stats', 'extra'], /unexpected argument "extra"/],
    [['inspect'], /inspect needs either --key or --instance/],
    [['sweep', '--batch-size', '0'], /--batch-size must be a positive integer/],
    [['sweep', '--max-batches', '1.5'], /--max-batches must be a positive integer/],
    [['stats', '--table', 'x; DROP TABLE y'], /--table must match/],
    [['inspect', '--key', 'k', '--jaeger-url', 'ftp://jaeger'], /the Jaeger URL must be an http\(s\) URL/],
    [['migrate', '--partition-interval-seconds', '60'], /--partition-interval-seconds needs --partitioned/],
    [['migrate', '--premade-partitions', '1'], /--premade-partitions needs --partitioned/],
    [['migrate', '--partitioned', '--partition-interval-seconds', '0'], /--partition-interval-seconds must be a positive integer; got "0"/],
    [['migrate', '--partitioned', '--partition-interval-seconds', '1e3'], /--partition-interval-seconds must be a positive integer/],
    [['migrate', '--partitioned', '--premade-partitions', '1.5'], /--premade-partitions must be zero or a positive integer; got "1.5"/],
    [['sweep', '--premade-partitions=-1'], /--premade-partitions must be zero or a positive integer; got "-1"/],
    [['sweep', '--partition-interval-seconds', 'day'], /--partition-interval-seconds must be a positive integer/],
    [['sweep', '--partitioned'], /sweep does not take --partitioned/],
    [['stats', '--partition-interval-seconds', '60'], /stats does not take --partition-interval-seconds/],
  ])('exits 2 with a clear message for the usage error %j', async (args, message) => {
    const run = await cli(args, { DATABASE_URL: 'postgres://127.0.0.1:1/none' });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stdout).toBe('');
  });

  it('reports a usage error as one JSON document with --json', async () => {
    const run = await cli(['frob', '--json']);
    expect(run.code).toBe(2);
    expect(run.json).toEqual({ error: { code: 'usage', message: expect.stringContaining('unknown command') } });
  });

  it('exits 2 when DATABASE_URL is unset', async () => {
    const run = await cli(['stats', '--json'], { DATABASE_URL: undefined });
    expect(run.code).toBe(2);
    expect(run.json.error.code).toBe('database_url_missing');
  });

  it.each(['not a url', 'mysql://root@127.0.0.1/db', 'postgres://user@host:99999999/db'])('exits 2 for the malformed DATABASE_URL %j', async (url) => {
    const run = await cli(['stats'], { DATABASE_URL: url });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/DATABASE_URL (is not a valid URL|must start with postgres:\/\/)/);
  });

  it('exits 3 when nothing listens at DATABASE_URL, without printing the password', async () => {
    const run = await cli(['stats', '--json'], { DATABASE_URL: 'postgres://user:s3cret@127.0.0.1:1/test' });
    expect(run.code).toBe(3);
    expect(run.json.error.code).toBe('unreachable');
    expect(run.json.error.message).toContain('127.0.0.1:1/test');
    expect(run.stdout).not.toContain('s3cret');
  });

  it('prints the migration SQL for the given table without connecting', async () => {
    const run = await cli(['migrate', '--print-sql', '--schema', 'billing', '--table', 'keys'], { DATABASE_URL: undefined });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('CREATE TABLE IF NOT EXISTS "billing"."keys"');
    expect(run.stdout).not.toContain('PARTITION');
  });

  it('prints the partitioned migration SQL with --partitioned, as the store makes it', async () => {
    const run = await cli(['migrate', '--print-sql', '--partitioned', '--schema', 'billing', '--table', 'keys'], { DATABASE_URL: undefined });
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(migrationSql({ schema: 'billing', table: 'keys', partitioning: true }));
    expect(run.stdout).toContain(') PARTITION BY RANGE (created_at);');
    expect(run.stdout).toContain('CREATE TABLE IF NOT EXISTS "billing"."keys_default" PARTITION OF "billing"."keys" DEFAULT');
    expect(run.stdout).toContain('CREATE OR REPLACE FUNCTION "billing"."keys_claim"(');
  });
});

describe('the koa-idempotency bin', () => {
  it('is what the build makes of src/cli/main.ts, and starts with a node shebang', () => {
    const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    const build = JSON.parse(readFileSync(new URL('../tsconfig.build.json', import.meta.url), 'utf8'));
    const { rootDir, outDir } = build.compilerOptions as { rootDir: string; outDir: string };
    expect(manifest.bin['koa-idempotency']).toBe(`${outDir}/cli/main.js`);
    expect(readFileSync(new URL(`../${rootDir}/cli/main.ts`, import.meta.url), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
    expect(manifest.files).toContain(outDir);
  });
});
