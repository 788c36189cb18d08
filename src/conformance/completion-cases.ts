import assert from 'node:assert/strict';
import { FencedError } from '../errors.js';
import type { CaseContext } from './case-context.js';
import { again, assertReplays, claimedOf, existingOf, newRequest, sampleResponse, since, sleep } from './fixtures.js';

/** complete() and release(): what a finished operation leaves for its retries, and for how long. */

/** The TTL of the expiry cases: the shortest a request can ask for. */
const TTL_SECONDS = 1;

export function completionCases({ test, capabilities }: CaseContext): void {
  test('replays a replayable completion to the next claim: status, headers (a multi-valued one included) and the body bytes', async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const response = sampleResponse();
    await store.complete(owner.lease, { replayable: true, response });
    const record = existingOf(await again(store, request), 'the same key, completed');
    assertReplays(record, response, 'the replay');
    assert.ok(record.completedAt instanceof Date, 'a completed record has its completion time');
    assert.equal(record.fingerprint, request.fingerprint, 'the completed record keeps its fingerprint');
    // A reused key (another fingerprint) gets the record, not a claim: the middleware answers 422.
    const reused = existingOf(await again(store, request, { fingerprint: 'fingerprint-b' }), 'the completed key with another fingerprint');
    assert.equal(reused.fingerprint, request.fingerprint, "the record keeps the first request's fingerprint");
  });

  test('replays a completion without a body as a null body', async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const response = { status: 204, headers: {}, body: null };
    await store.complete(owner.lease, { replayable: true, response });
    assertReplays(existingOf(await again(store, request), 'the same key, completed'), response, 'the replay of a 204');
  });

  test('keeps a non-replayable completion as completed with replayable: false and no response', async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    await store.complete(owner.lease, { replayable: false, status: 201 });
    const record = existingOf(await again(store, request), 'the same key, completed');
    assert.equal(record.status, 'completed', "the record's status");
    assert.equal(record.replayable, false, 'replayable: false');
    assert.equal(record.response, null, 'no response');
  });

  test('accepts the same completion again from its owner (the answer to the first may have been lost; the middleware retries it)', async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const response = sampleResponse();
    await store.complete(owner.lease, { replayable: true, response });
    await store.complete(owner.lease, { replayable: true, response });
    assertReplays(existingOf(await again(store, request), 'the same key, completed twice'), response, 'the replay');
  });

  test('release() deletes the owned record: the key is claimed again afresh, at attempt 1 and without steps', async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    await store.saveStep(owner.lease, 'charge', { id: 'ch_1' });
    await store.release(owner.lease);
    const fresh = claimedOf(await again(store, request), 'the released key');
    assert.equal(fresh.record.attempt, 1, 'a released key starts again at attempt 1');
    assert.deepEqual(fresh.record.steps, {}, 'a released key has no steps');
    assert.equal(fresh.record.status, 'in_progress', "the new record's status");
  });

  test("changes nothing of a completed record through its owner's lease: release() deletes nothing, saveStep() throws FencedError", async ({ store }) => {
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const response = sampleResponse();
    await store.complete(owner.lease, { replayable: true, response });
    await store.release(owner.lease);
    await assert.rejects(store.saveStep(owner.lease, 'late', { id: 'late' }), FencedError, 'a step after the completion');
    const record = existingOf(await again(store, request), 'the completed key after a late release() and saveStep()');
    assertReplays(record, response, 'the replay');
    assert.deepEqual(record.steps, {}, 'the late step changed nothing');
  });

  const precisionMs = capabilities.ttlPrecisionMs;
  test(
    `keeps a completed record until ttlSeconds after its completion (there at +300 ms, with ttlSeconds ${TTL_SECONDS}), then frees the key (claimed afresh at +${TTL_SECONDS * 1000 + precisionMs} ms)`,
    async ({ store }) => {
      const request = newRequest({ ttlSeconds: TTL_SECONDS, leaseMs: 500 });
      const owner = claimedOf(await store.claim(request), 'a new key');
      const response = sampleResponse();
      await store.complete(owner.lease, { replayable: true, response });
      const completedAtMs = performance.now();
      await sleep(300);
      assertReplays(existingOf(await again(store, request), 'the key 300 ms after its completion'), response, 'the replay before expiry');
      await sleep(TTL_SECONDS * 1000 + precisionMs - since(completedAtMs));
      const fresh = claimedOf(await again(store, request, { fingerprint: 'fingerprint-b' }), `the key ${Math.round(since(completedAtMs))} ms after its completion`);
      assert.equal(fresh.record.attempt, 1, 'an expired record is as if it never existed: attempt 1');
      assert.deepEqual(fresh.record.steps, {}, 'an expired record leaves no steps');
      assert.equal(fresh.record.fingerprint, 'fingerprint-b', 'the new record has the new fingerprint');
    },
    TTL_SECONDS * 1000 + precisionMs + 300,
  );

  test(
    `counts the expiry from the completion, not from the claim: a record completed ${TTL_SECONDS * 1000 + 200} ms after its claim (lease renewed meanwhile) is replayed`,
    async ({ store }) => {
      // The middleware renews the lease every leaseMs / 3 and requires ttlSeconds * 1000 > leaseMs.
      const request = newRequest({ ttlSeconds: TTL_SECONDS, leaseMs: 900 });
      const owner = claimedOf(await store.claim(request), 'a new key');
      const claimedAtMs = performance.now();
      while (since(claimedAtMs) < TTL_SECONDS * 1000 + 200) {
        await sleep(300);
        assert.equal(await store.renewLease(owner.lease, request.leaseMs), true, 'the owner renews its lease');
      }
      const response = sampleResponse();
      await store.complete(owner.lease, { replayable: true, response });
      assertReplays(existingOf(await again(store, request), 'the key right after its late completion'), response, 'the replay');
    },
    TTL_SECONDS * 1000 + 500,
  );
}
