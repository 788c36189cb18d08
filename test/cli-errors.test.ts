import { describe, expect, it } from 'vitest';
import { commandError } from '../src/cli/connection.js';
import { cli } from './helpers/cli-run.js';
import { DATABASE_URL } from './helpers/databases.js';

/** How the CLI reports a database it cannot use: exit codes and error codes. */
describe('koa-idempotency CLI on the Postgres server', () => {
  describe('connection errors', () => {
    it('exits 3 when the server refuses the login', async () => {
      const url = new URL(DATABASE_URL);
      url.username = 'no_such_role_cli_test';
      const run = await cli(['stats', '--json'], { DATABASE_URL: url.href });
      expect(run.code).toBe(3);
      expect(run.json.error.code).toBe('login_refused');
    });

    it('exits 3 when the database does not exist', async () => {
      const url = new URL(DATABASE_URL);
      url.pathname = '/no_such_database_cli_test';
      const run = await cli(['stats'], { DATABASE_URL: url.href });
      expect(run.code).toBe(3);
      expect(run.stderr).toContain('has no such database');
    });
  });
});

describe('commandError()', () => {
  const table = { schema: 'public', table: 'idempotency_records' };

  it.each([
    [{ code: '42P01', message: 'relation does not exist' }, 'table_missing', 3],
    [{ code: '3F000', message: 'schema does not exist' }, 'table_missing', 3],
    [{ code: '57P01', message: 'terminating connection due to administrator command' }, 'unreachable', 3],
    [{ code: '08006', message: 'connection failure' }, 'unreachable', 3],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'unreachable', 3],
    [{ code: '42501', message: 'permission denied for table idempotency_records' }, 'failed', 4],
    [new Error('something else'), 'failed', 4],
  ])('classifies %j as %s (exit %i)', (error, code, exitCode) => {
    const failure = commandError(error, table);
    expect(failure.code).toBe(code);
    expect(failure.exitCode).toBe(exitCode);
  });

  it('keeps the SQLSTATE in the message of an unexpected SQL error', () => {
    expect(commandError(Object.assign(new Error('permission denied'), { code: '42501' }), table).message).toBe('permission denied (SQLSTATE 42501)');
  });
});
