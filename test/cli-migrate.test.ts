import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli } from './helpers/cli-run.js';
import { cliSchema } from './helpers/cli-schema.js';

/** koa-idempotency migrate on the Postgres server, and what the other commands say before it ran. */
describe('koa-idempotency CLI on the Postgres server', () => {
  const cliDatabase = cliSchema('cli_migrate');
  const { schema, inSchema } = cliDatabase;
  let pool: pg.Pool;
  beforeAll(() => {
    ({ pool } = cliDatabase);
  });

  describe('a missing table', () => {
    it.each([['stats'], ['sweep'], ['inspect', '--key', 'k']])('makes %s exit 3 and say to run migrate', async (...args) => {
      const run = await cli([...args, ...inSchema, '--json']);
      expect(run.code).toBe(3);
      expect(run.json.error.code).toBe('table_missing');
      expect(run.json.error.message).toContain('koa-idempotency migrate');
    });
  });

  describe('migrate', () => {
    it('creates the records table, and a second run changes nothing', async () => {
      const first = await cli(['migrate', ...inSchema]);
      expect(first.code).toBe(0);
      expect(first.stdout).toContain(`"${schema}"."idempotency_records" is up to date`);
      const { rows } = await pool.query(`SELECT to_regclass($1) AS name`, [`"${schema}".idempotency_records`]);
      expect(rows[0].name).not.toBeNull();

      const second = await cli(['migrate', ...inSchema, '--json']);
      expect(second.code).toBe(0);
      expect(second.json).toMatchObject({ migrated: true, schema, table: 'idempotency_records' });
    });
  });
});
