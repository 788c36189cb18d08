import assert from 'node:assert/strict';
import type { CaseContext } from './case-context.js';
import { again, claimedOf, existingOf, newRequest, newTraceparent } from './fixtures.js';

/** claim(): one owner per key and scope; every duplicate reads the record it ran into. */

const CONCURRENT_CLAIMS = 20;

export function claimCases({ test }: CaseContext): void {
  test('claims a new key: a lease (scope, key, fence, ttlSeconds) and a record at attempt 1, in progress, with the fingerprint given', async ({ store }) => {
    const request = newRequest({ fingerprintVersion: 3 });
    const { lease, record } = claimedOf(await store.claim(request), 'a new key');
    assert.equal(lease.scope, request.scope, 'the lease names the scope');
    assert.equal(lease.key, request.key, 'the lease names the key');
    assert.equal(typeof lease.fence, 'string', 'the fence is a string');
    assert.ok(lease.fence.length > 0, 'the fence is not empty');
    assert.equal(lease.ttlSeconds, request.ttlSeconds, 'the lease carries the ttlSeconds of the request');
    assert.equal(record.scope, request.scope, "the record's scope");
    assert.equal(record.key, request.key, "the record's key");
    assert.equal(record.status, 'in_progress', "the record's status");
    assert.equal(record.attempt, 1, 'the first execution is attempt 1');
    assert.equal(record.fingerprint, request.fingerprint, "the record's fingerprint");
    assert.equal(record.fingerprintVersion, request.fingerprintVersion, "the record's fingerprint version");
    assert.equal(record.fence, lease.fence, "the record's fence is the lease's");
    assert.deepEqual(record.steps, {}, 'a new record has no steps');
    assert.equal(record.response, null, 'a record in progress has no response');
    assert.equal(record.completedAt, null, 'a record in progress has no completion time');
  });

  test("answers the same key while it is in progress with the existing record: its fingerprint, fence, remaining lease and the executing request's correlation id and traceparent", async ({
    store,
  }) => {
    const request = newRequest({ leaseMs: 20_000 });
    const first = claimedOf(await store.claim(request), 'the first claim');
    const record = existingOf(await again(store, request, { traceparent: newTraceparent() }), 'the same key, in progress');
    assert.equal(record.status, 'in_progress', "the record's status");
    assert.equal(record.fingerprint, request.fingerprint, "the record's fingerprint");
    assert.equal(record.fingerprintVersion, request.fingerprintVersion, "the record's fingerprint version");
    assert.equal(record.attempt, 1, "the record's attempt");
    assert.equal(record.fence, first.lease.fence, 'the fence of the owner');
    assert.ok(record.leaseRemainingMs > 0 && record.leaseRemainingMs <= request.leaseMs, `the remaining lease is in (0, leaseMs]; got ${record.leaseRemainingMs}`);
    assert.equal(record.correlationId, request.correlationId, 'the correlation id of the executing request, not the duplicate');
    assert.equal(record.traceparent, request.traceparent, 'the traceparent of the executing request, not the duplicate');
  });

  test('answers a request with another fingerprint on a key in progress with the existing record (the middleware answers 422)', async ({ store }) => {
    const request = newRequest();
    claimedOf(await store.claim(request), 'the first claim');
    const record = existingOf(await again(store, request, { fingerprint: 'fingerprint-b' }), 'another fingerprint');
    assert.equal(record.fingerprint, request.fingerprint, 'the record keeps the fingerprint of the request that claimed it');
  });

  test('keeps the same key in another scope as an independent record, also when scope and key only differ in where they split', async ({ store }) => {
    const request = newRequest();
    const inFirstScope = claimedOf(await store.claim(request), 'the key in its scope');
    claimedOf(await store.claim({ ...request, scope: `${request.scope}-other` }), 'the same key in another scope');
    // "scope-x" + "yz" and "scope-xy" + "z": a store that joins scope and key without a separator mixes them up.
    const split = newRequest();
    claimedOf(await store.claim({ ...split, scope: `${split.scope}x`, key: `y${split.key}` }), 'one split of a string');
    claimedOf(await store.claim({ ...split, scope: `${split.scope}xy`, key: split.key }), 'another split of the same string');
    // Completing one scope's record leaves the other's in progress.
    await store.complete(inFirstScope.lease, { replayable: false, status: 200 });
    const other = existingOf(await again(store, { ...request, scope: `${request.scope}-other` }), 'the other scope after a completion in the first');
    assert.equal(other.status, 'in_progress', "the other scope's record is still in progress");
  });

  test(`lets exactly one of ${CONCURRENT_CLAIMS} concurrent claims of a new key run it`, async ({ store }) => {
    const request = newRequest();
    const results = await Promise.all(Array.from({ length: CONCURRENT_CLAIMS }, () => again(store, request)));
    const winners = results.filter((result) => result.kind === 'claimed');
    assert.equal(winners.length, 1, `exactly one claim wins; got ${winners.length}`);
    const winner = claimedOf(winners[0]!, 'the winner');
    for (const result of results) {
      if (result === winner) continue;
      const record = existingOf(result, 'a losing claim');
      assert.equal(record.fence, winner.lease.fence, "a losing claim sees the winner's record");
    }
  });
}
