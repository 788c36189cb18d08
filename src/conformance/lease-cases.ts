import assert from 'node:assert/strict';
import { FencedError } from '../errors.js';
import type { CaseContext } from './case-context.js';
import { again, assertReplays, claimedOf, existingOf, newRequest, sampleResponse, since, sleep } from './fixtures.js';

/**
 * Leases and fencing: a lapsed lease lets the same request take over (a crashed worker), and from then on
 * every write of the former owner is refused, so a late worker can never overwrite the new owner's work.
 */

/** The lease of the takeover cases: short enough to lapse at once. */
const SHORT_LEASE_MS = 50;
const CONCURRENT_TAKEOVERS = 20;

export function leaseCases({ test, capabilities }: CaseContext): void {
  const lapseMs = SHORT_LEASE_MS + capabilities.leasePrecisionMs;

  test(
    'renewLease() returns true while the lease is owned, and keeps retries from taking the record over',
    async ({ store }) => {
      const request = newRequest({ leaseMs: 300 });
      const owner = claimedOf(await store.claim(request), 'a new key');
      assert.equal(await store.renewLease(owner.lease, 5_000), true, 'renewing an owned lease');
      await sleep(300 + capabilities.leasePrecisionMs);
      const record = existingOf(await again(store, request), 'a retry after the first lease would have ended');
      assert.equal(record.status, 'in_progress', "the record's status");
      assert.equal(record.fence, owner.lease.fence, 'the owner keeps the record');
      assert.ok(record.leaseRemainingMs > 3_000, `the renewed lease has time left; got ${record.leaseRemainingMs} ms`);
    },
    300 + capabilities.leasePrecisionMs,
  );

  test(
    'keeps a record whose lease is renewed past its ttlSeconds: a retry finds it in progress under its owner, never claims it afresh',
    async ({ store }) => {
      // A handler slower than ttlSeconds: an expiry under it would let a retry run the operation a second time.
      const request = newRequest({ ttlSeconds: 1, leaseMs: 900 });
      const owner = claimedOf(await store.claim(request), 'a new key');
      const claimedAtMs = performance.now();
      while (since(claimedAtMs) < 1_000 + capabilities.ttlPrecisionMs) {
        await sleep(300);
        assert.equal(await store.renewLease(owner.lease, request.leaseMs), true, 'the owner renews its lease');
      }
      const record = existingOf(await again(store, request), `a retry ${Math.round(since(claimedAtMs))} ms after a claim with ttlSeconds 1`);
      assert.equal(record.status, 'in_progress', "the record's status");
      assert.equal(record.fence, owner.lease.fence, 'the owner keeps the record');
    },
    1_000 + capabilities.ttlPrecisionMs + 300,
  );

  test(
    `lets the same request take over a lapsed lease (leaseMs ${SHORT_LEASE_MS}): attempt 2, a new fence, the steps of the first owner; the first owner's complete() and saveStep() throw FencedError, its renewLease() returns false and its release() deletes nothing`,
    async ({ store }) => {
      const request = newRequest({ leaseMs: SHORT_LEASE_MS });
      const first = claimedOf(await store.claim(request), 'a new key');
      const steps = { charge: { id: 'ch_1', amount: 1200, captured: true, tags: ['a', 'b'] }, note: 'sent', nothing: null };
      for (const [name, result] of Object.entries(steps)) await store.saveStep(first.lease, name, result);
      await sleep(lapseMs);

      const takeover = claimedOf(await again(store, request, { leaseMs: 30_000 }), `a retry ${lapseMs} ms into a ${SHORT_LEASE_MS} ms lease`);
      assert.equal(takeover.record.attempt, 2, 'a takeover is attempt 2');
      assert.notEqual(takeover.lease.fence, first.lease.fence, 'a takeover has a new fence');
      assert.equal(takeover.record.fence, takeover.lease.fence, "the record's fence is the new lease's");
      assert.deepEqual(takeover.record.steps, steps, 'the steps saved by the first owner');
      assert.equal(takeover.record.status, 'in_progress', "the record's status");

      await assert.rejects(store.complete(first.lease, { replayable: true, response: sampleResponse() }), FencedError, "the first owner's complete()");
      await assert.rejects(store.complete(first.lease, { replayable: false, status: 201 }), FencedError, "the first owner's non-replayable complete()");
      assert.equal(await store.renewLease(first.lease, 30_000), false, "the first owner's renewLease()");
      await assert.rejects(store.saveStep(first.lease, 'late', { id: 'late' }), FencedError, "the first owner's saveStep()");
      await store.release(first.lease); // a lost lease is not an error here, and must delete nothing

      const record = existingOf(await again(store, request), 'the key after the late writes of the first owner');
      assert.equal(record.status, 'in_progress', 'the late completion changed nothing');
      assert.equal(record.fence, takeover.lease.fence, 'the new owner keeps the record');
      assert.equal(record.attempt, 2, "the record's attempt");
      assert.deepEqual(record.steps, steps, 'the late step changed nothing');

      const response = sampleResponse();
      await store.saveStep(takeover.lease, 'refund', { id: 're_1' });
      await store.complete(takeover.lease, { replayable: true, response });
      assertReplays(existingOf(await again(store, request), "the key after the new owner's completion"), response, "the new owner's replay");
    },
    lapseMs,
  );

  test(
    'never lets a request with another fingerprint take over a lapsed lease; the same request still can',
    async ({ store }) => {
      const request = newRequest({ leaseMs: SHORT_LEASE_MS });
      const first = claimedOf(await store.claim(request), 'a new key');
      await sleep(lapseMs);
      const record = existingOf(await again(store, request, { fingerprint: 'fingerprint-b' }), 'another fingerprint on a lapsed lease');
      assert.equal(record.fingerprint, request.fingerprint, 'the record keeps its fingerprint');
      assert.equal(record.fence, first.lease.fence, 'the record keeps its fence');
      const takeover = claimedOf(await again(store, request), 'the same request on the lapsed lease');
      assert.equal(takeover.record.attempt, 2, 'a takeover is attempt 2');
    },
    lapseMs,
  );

  test(
    `lets exactly one of ${CONCURRENT_TAKEOVERS} concurrent retries take over a lapsed lease`,
    async ({ store }) => {
      const request = newRequest({ leaseMs: SHORT_LEASE_MS });
      claimedOf(await store.claim(request), 'a new key');
      await sleep(lapseMs);
      const results = await Promise.all(Array.from({ length: CONCURRENT_TAKEOVERS }, () => again(store, request, { leaseMs: 30_000 })));
      const winners = results.filter((result) => result.kind === 'claimed');
      assert.equal(winners.length, 1, `exactly one retry takes over; got ${winners.length}`);
      const winner = claimedOf(winners[0]!, 'the takeover');
      assert.equal(winner.record.attempt, 2, 'the takeover is attempt 2');
      for (const result of results) {
        if (result !== winner) assert.equal(existingOf(result, 'a losing retry').fence, winner.lease.fence, "a losing retry sees the winner's record");
      }
    },
    lapseMs,
  );
}
