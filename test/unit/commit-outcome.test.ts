import { describe, expect, it } from 'vitest';
import { CompletionRolledBackError } from '../../src/index.js';
import { commitFailure } from '../../src/store/completion-rolled-back.js';

/**
 * A failed COMMIT is answered with what is known: Postgres' own refusal (a deferred constraint, a serialization
 * failure, a deadlock) rolled the transaction back; anything else leaves the outcome unknown. The deferred
 * constraint end to end is in test/regressions/answers-after-the-handler-failures.test.ts; a COMMIT cut on the wire in
 * test/faults-connection-cut.test.ts.
 */
describe('commitFailure()', () => {
  const failure = (code?: string) => Object.assign(new Error('COMMIT failed'), code === undefined ? {} : { code });

  it.each(['23505', '23503', '23P01', '40001', '40P01', 'P0001', '22012'])('knows a COMMIT that Postgres answered with SQLSTATE %s as rolled back', (code) => {
    const error = commitFailure(failure(code));
    expect(error).toBeInstanceOf(CompletionRolledBackError);
    expect(error).toMatchObject({ atCommit: true, transactionAborted: false, constraintViolated: code.startsWith('23'), conflicted: code.startsWith('40') });
  });

  it.each([
    ['the connection was lost (08006)', '08006'],
    ['the server is shutting down (57P01)', '57P01'],
    ['the statement was cancelled (57014)', '57014'],
    ['an I/O error (58030)', '58030'],
    ['an internal error (XX000)', 'XX000'],
    ['memory ran out (53200)', '53200'],
    ['no SQLSTATE at all (a socket error)', undefined],
  ])('leaves the outcome unknown when %s', (_label, code) => {
    const error = failure(code);
    expect(commitFailure(error)).toBe(error);
  });

  /**
   * Found under load on a pipelined pool whose backend was killed: the COMMIT written to the closed socket failed
   * with EPIPE, five capitals like an SQLSTATE, and the client was told 500 "Postgres refused to commit".
   */
  it.each([
    ['write EPIPE', { code: 'EPIPE', errno: -32, syscall: 'write' }],
    ['read EBADF', { code: 'EBADF', errno: -9, syscall: 'read' }],
  ])('leaves the outcome unknown for a Node system error whose errno name looks like an SQLSTATE (%s)', (message, fields) => {
    const error = Object.assign(new Error(message), fields);
    expect(commitFailure(error)).toBe(error);
  });
});
