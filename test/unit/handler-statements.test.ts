import { describe, expect, it } from 'vitest';
import { handlerStatementError, transactionControlError } from '../../src/store/transaction-control.js';

/**
 * What a transactional handler may send on the claim's connection, read from the text as Postgres reads it:
 * comments inside the first statement count as white space, and a keyword followed by a dot is a setting's
 * name, not the keyword (the s9b attack: `SET local.tenant = …` passed as a SET LOCAL and leaked to the next
 * requests on the pooled connection). The db tier runs these on Postgres (test/attacks/s9b-tx-db-misuse).
 */
describe('the statements a transactional handler may send', () => {
  it.each([
    "SET local.tenant = 'evil'",
    "SET LOCAL.tenant = 'evil'",
    "SET local . tenant = 'evil'",
    "SET LOCAL/* */.tenant = 'evil'",
    'SET local$x.y = 1',
    'SET transaction.x = 1',
    'SET constraints.x = 1',
    'SET search_path = x',
    'SET SESSION local.tenant = 1',
    `SET LOCAL${' '.repeat(80)}x = 1`,
    // A comment that starts with the head's last character: `SET local . tenant` to Postgres.
    `SET LOCAL${' '.repeat(54)}--\n.tenant = 'evil'`,
    // A no-break space is no white space to Postgres: a session SET of `local\u00a0x.tenant`.
    "SET LOCAL\u00a0x.tenant = 'evil'",
    'COPY t FROM STDIN',
    'COPY/* */t FROM STDIN',
  ])('refuses %j', (text) => {
    expect(handlerStatementError(text)?.code).toBe('TRANSACTION_CONTROL');
  });

  it.each([
    'SET LOCAL x.y = 1',
    "SET LOCAL local.tenant = 'a'",
    'SET LOCAL/* a comment */x.y = 1',
    'set\tlocal\nstatement_timeout = 1000',
    'SET CONSTRAINTS ALL DEFERRED',
    'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
    'COPY (SELECT 1) TO STDOUT',
    'COPY /* c */ (SELECT 1) TO STDOUT',
    'SELECT 1',
  ])('lets %j through', (text) => {
    expect(handlerStatementError(text)).toBeUndefined();
  });

  it('reads a ROLLBACK TO SAVEPOINT behind a comment as one, and a commented-out TO as none', () => {
    expect(transactionControlError('ROLLBACK/* */TO SAVEPOINT s')).toBeUndefined();
    expect(transactionControlError('ROLLBACK /* TO SAVEPOINT s */')?.code).toBe('TRANSACTION_CONTROL');
    expect(transactionControlError('ROLLBACK -- TO s\n')?.code).toBe('TRANSACTION_CONTROL');
  });
});
