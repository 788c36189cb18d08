import assert from 'node:assert/strict';
import type { ClaimRequest, TransactionalClaim } from '../store/types.js';
import { claimInTransaction, trackedWatch, type CaseContext, type CaseScope } from './case-context.js';
import { again, assertReplays, claimedOf, existingOf, newRequest, sampleResponse, since, sleep } from './fixtures.js';

/**
 * claimInTransaction(): the claim, the handler's writes (through `db`) and the completion commit together
 * or not at all. A second transaction on a key whose claim is not committed yet must not wait for it.
 */

/** How soon a transactional claim must answer `busy` instead of waiting for the transaction that holds the key. */
const BUSY_WITHIN_MS = 1_000;

export function transactionCases({ test, capabilities }: CaseContext): void {
  if (!capabilities.transactions) {
    test('refuses a transactional claim (capabilities.transactions is false) and leaves the key free', async ({ store }) => {
      const request = newRequest();
      await assert.rejects(store.claimInTransaction(request), 'claimInTransaction() rejects: the middleware answers 503 and never runs the handler');
      claimedOf(await store.claim(request), 'the key after the refused transactional claim');
    });
    return;
  }

  test('claims a new key in a transaction whose db runs SQL (SELECT 1) and saves steps; commit() stores the completion', async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    assert.equal(claim.lease.scope, request.scope, 'the lease names the scope');
    assert.equal(claim.lease.key, request.key, 'the lease names the key');
    assert.equal(claim.lease.ttlSeconds, request.ttlSeconds, 'the lease carries the ttlSeconds of the request');
    assert.equal(claim.record.attempt, 1, 'the first execution is attempt 1');
    assert.equal(claim.record.status, 'in_progress', "the record's status");
    assert.equal(claim.record.fingerprint, request.fingerprint, "the record's fingerprint");
    const { rows } = await claim.db.query<{ one: number }>('SELECT 1 AS one');
    assert.equal(Number(rows[0]?.one), 1, "the transaction's db answers SELECT 1");
    await store.saveStep(claim.lease, 'charge', { id: 'ch_1' }, claim.db);
    const response = sampleResponse();
    await claim.commit({ replayable: true, response });
    const record = existingOf(await again(store, request), 'the key after the commit');
    assertReplays(record, response, 'the replay of the committed completion');
    assert.deepEqual(record.steps, { charge: { id: 'ch_1' } }, 'the step saved in the transaction');
    assertReplays(existingOf(await claimInTransaction(scope, request), 'a transactional duplicate of the completed key'), response, 'the transactional replay');
  });

  test('commits a non-replayable completion as replayable: false with no response', async (scope) => {
    const request = newRequest();
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    await claim.commit({ replayable: false, status: 201 });
    const record = existingOf(await again(scope.store, request), 'the key after the commit');
    assert.equal(record.status, 'completed', "the record's status");
    assert.equal(record.replayable, false, 'replayable: false');
    assert.equal(record.response, null, 'no response');
  });

  test('rollback() leaves the key free: claimed again afresh, at attempt 1 and without steps', async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    await store.saveStep(claim.lease, 'charge', { id: 'ch_1' }, claim.db);
    await claim.rollback();
    const fresh = claimedOf(await again(store, request), 'the key after the rollback');
    assert.equal(fresh.record.attempt, 1, 'attempt 1');
    assert.deepEqual(fresh.record.steps, {}, 'no steps: they were rolled back with the claim');
  });

  for (const ending of ['commit', 'rollback'] as const) {
    test(`wakes a watcher of the key within ${capabilities.wakeWithinMs} ms of the transaction's ${ending}`, async (scope) => {
      const request = newRequest();
      // Registered before the transaction opens, so that a store on one connection can register it at all.
      const watch = await trackedWatch(scope, request.scope, request.key);
      const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
      const woken = watch.next(5_000);
      const endedAtMs = performance.now();
      await (ending === 'commit' ? claim.commit({ replayable: true, response: sampleResponse() }) : claim.rollback());
      assert.equal(await woken, 'changed', `the watcher is woken by the ${ending}`);
      assert.ok(since(endedAtMs) < capabilities.wakeWithinMs, `woken ${Math.round(since(endedAtMs))} ms after the ${ending}`);
      watch.close();
    });
  }

  test(`wakes a watcher of the key within ${capabilities.wakeWithinMs} ms of a COMMIT that fails (a deferred constraint), and leaves the key free`, async (scope) => {
    const request = newRequest();
    const watch = await trackedWatch(scope, request.scope, request.key);
    const claim = claimedOf(await claimInTransaction(scope, request), 'a new key');
    // A write whose constraint is only checked at COMMIT: the completion is written, then the COMMIT fails
    // and takes with it any notification the completion had queued.
    await claim.db.query('CREATE TEMP TABLE conformance_deferred (id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP');
    await claim.db.query('INSERT INTO conformance_deferred VALUES (1), (1)');
    const woken = watch.next(5_000);
    const failedAtMs = performance.now();
    await assert.rejects(claim.commit({ replayable: true, response: sampleResponse() }), 'the COMMIT fails');
    assert.equal(await woken, 'changed', 'the watcher is woken by the failed COMMIT');
    assert.ok(since(failedAtMs) < capabilities.wakeWithinMs, `woken ${Math.round(since(failedAtMs))} ms after the failed COMMIT`);
    claimedOf(await again(scope.store, request), 'the key after the failed COMMIT');
    watch.close();
  });

  if (!capabilities.concurrentTransactions) return;

  test(`answers busy within ${BUSY_WITHIN_MS} ms to a second transactional claim of a key whose claim is not committed, and existing once it is`, async (scope) => {
    const request = newRequest();
    const first = claimedOf(await claimInTransaction(scope, request), 'a new key');
    const startedMs = performance.now();
    const second = await claimInTransaction(scope, request);
    const tookMs = since(startedMs);
    assert.equal(second.kind, 'busy', 'a transactional claim of a key held by an open transaction');
    assert.ok(tookMs < BUSY_WITHIN_MS, `busy in ${Math.round(tookMs)} ms: the second claim must not wait for the first transaction`);
    // Another key is not held up by the open transaction.
    const other = claimedOf(await claimInTransaction(scope, newRequest()), 'another key while the first transaction is open');
    await other.rollback();
    const response = sampleResponse();
    await first.commit({ replayable: true, response });
    const after = await claimSettled(scope, request);
    assertReplays(existingOf(after, 'a transactional duplicate after the commit'), response, 'the replay');
  });

  test('answers busy to a transactional claim of a key whose claim is not committed, and lets it claim once that claim is rolled back', async (scope) => {
    const request = newRequest();
    const first = claimedOf(await claimInTransaction(scope, request), 'a new key');
    const second = await claimInTransaction(scope, request);
    assert.equal(second.kind, 'busy', 'a transactional claim of a key held by an open transaction');
    await first.rollback();
    const claim = claimedOf(await claimSettled(scope, request), 'the key after the rollback');
    assert.equal(claim.record.attempt, 1, 'attempt 1');
    await claim.rollback();
  });
}

/**
 * A transactional claim just after another transaction on its key ended: a moment may pass between that
 * transaction's answer and the release of its hold on the key, so a `busy` answer is retried a few times,
 * as the middleware does (5 to 80 ms apart).
 */
async function claimSettled(scope: CaseScope, request: ClaimRequest): Promise<TransactionalClaim> {
  let claim = await claimInTransaction(scope, request);
  for (let pauseMs = 5; claim.kind === 'busy' && pauseMs <= 80; pauseMs *= 2) {
    await sleep(pauseMs);
    claim = await claimInTransaction(scope, request);
  }
  return claim;
}
