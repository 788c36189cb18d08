import assert from 'node:assert/strict';
import { CompletionRolledBackError } from '../store/completion-rolled-back.js';
import { TransactionControlError } from '../store/transaction-control.js';
import { claimInTransaction, type CaseContext } from './case-context.js';
import { again, claimedOf, existingOf, newRequest, sampleResponse } from './fixtures.js';

/**
 * The `db` of a transactional claim is what the middleware hands the handler (`ctx.idempotency.db`): a
 * capability to run statements in the claim's transaction, never a way to end it or to keep using it. A
 * handler that could commit it would commit the claim with half its writes, and a retry would run the
 * operation again.
 */

const REFUSED_METHODS = ['commit', 'rollback', 'release'] as const;

export function transactionalDbCases({ test, capabilities }: CaseContext): void {
  if (!capabilities.transactions) return;

  for (const method of REFUSED_METHODS) {
    test(`db.${method}() throws a TransactionControlError and leaves the claim's transaction open`, async (scope) => {
      const request = newRequest();
      const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
      const refused = (claim.db as unknown as Partial<Record<(typeof REFUSED_METHODS)[number], () => unknown>>)[method];
      assert.equal(typeof refused, 'function', `db.${method} exists, so that a handler calling it is told why it is refused`);
      assert.throws(() => refused!.call(claim.db), TransactionControlError, `db.${method}() throws a TransactionControlError`);
      const { rows } = await claim.db.query<{ one: number }>('SELECT 1 AS one');
      assert.equal(Number(rows[0]?.one), 1, `the transaction still runs statements after the refused ${method}()`);
      await claim.commit({ replayable: true, response: sampleResponse() });
      existingOf(await again(scope.store, request), `the key after a commit that followed the refused ${method}()`);
    });
  }

  test('db.query() refuses COMMIT with a TransactionControlError; the claim still commits once, by commit()', async (scope) => {
    const request = newRequest();
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    await assert.rejects(claim.db.query('COMMIT'), TransactionControlError, 'db.query("COMMIT") rejects');
    await claim.commit({ replayable: true, response: sampleResponse() });
    existingOf(await again(scope.store, request), 'the key after the commit');
  });

  test('commit() rejects with a CompletionRolledBackError (atCommit) when Postgres refuses the COMMIT, and leaves the key free', async (scope) => {
    const request = newRequest();
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    // A deferred constraint is checked by COMMIT; the temporary table goes with the transaction.
    await claim.db.query('CREATE TEMPORARY TABLE conformance_deferred (id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP');
    await claim.db.query('INSERT INTO conformance_deferred (id) VALUES (1), (1)');
    const refused = await claim.commit({ replayable: true, response: sampleResponse() }).then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.ok(refused instanceof CompletionRolledBackError, `commit() rejects with a CompletionRolledBackError; got ${String(refused)}`);
    assert.equal(refused.atCommit, true, 'atCommit: Postgres answered the COMMIT itself');
    claimedOf(await again(scope.store, request), 'the key after the refused COMMIT');
  });

  for (const ending of ['commit', 'rollback'] as const) {
    test(`db rejects every query with a TransactionControlError once the claim's ${ending}() has begun`, async (scope) => {
      const request = newRequest();
      const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
      const ended = ending === 'commit' ? claim.commit({ replayable: true, response: sampleResponse() }) : claim.rollback();
      // Sent while the claim ends: it must not run in the transaction being ended, nor in any later one.
      const during = assert.rejects(claim.db.query('SELECT 1'), TransactionControlError, `a query sent as ${ending}() began`);
      await ended;
      await during;
      await assert.rejects(claim.db.query('SELECT 1'), TransactionControlError, `a query sent after ${ending}()`);
    });
  }
}
