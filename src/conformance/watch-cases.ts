import assert from 'node:assert/strict';
import { trackedWatch, type CaseContext } from './case-context.js';
import { again, claimedOf, existingOf, newRequest, sampleResponse, since, sleep } from './fixtures.js';

/**
 * watch(): a waiting duplicate registers, re-reads the record, then waits for it to change. It must learn
 * of a completion or a release soon (else it sleeps out its whole wait), including one that landed
 * between its registration and its wait, and must not oversleep its timeout.
 */

/** The wait every case allows a watcher; a conforming store wakes it much sooner (`wakeWithinMs`). */
const LONG_WAIT_MS = 5_000;
/** The timeout of the cases where nothing happens. */
const SHORT_WAIT_MS = 300;
/** How early a timeout may come (timers) and how much later than asked it may come. */
const EARLY_MS = 20;
const LATE_MS = 500;
/**
 * Keys waited for at once in one case: more than PostgresStore announces by default (64 waiters, each a lock
 * in Postgres' shared lock table); the others must still learn of their change.
 */
const MANY_KEYS = 100;

export function watchCases({ test, capabilities }: CaseContext): void {
  const { wakeWithinMs } = capabilities;

  test(`wakes every watcher of a key in progress ('changed') within ${wakeWithinMs} ms of its completion`, async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const watches = [await trackedWatch(scope, request.scope, request.key), await trackedWatch(scope, request.scope, request.key)];
    const woken = watches.map((watch) => watch.next(LONG_WAIT_MS));
    const completedAtMs = performance.now();
    await store.complete(owner.lease, { replayable: true, response: sampleResponse() });
    for (const [index, wake] of woken.entries()) {
      assert.equal(await wake, 'changed', `watcher ${index + 1} is woken by the completion`);
      assert.ok(since(completedAtMs) < wakeWithinMs, `watcher ${index + 1} woken ${Math.round(since(completedAtMs))} ms after the completion`);
    }
    assert.equal(existingOf(await again(store, request), 'the re-read after the wake').status, 'completed', 'the re-read finds the completion');
    for (const watch of watches) watch.close();
  });

  test(`wakes a watcher within ${wakeWithinMs} ms of the release of the key`, async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const watch = await trackedWatch(scope, request.scope, request.key);
    const woken = watch.next(LONG_WAIT_MS);
    const releasedAtMs = performance.now();
    await store.release(owner.lease);
    assert.equal(await woken, 'changed', 'the watcher is woken by the release');
    assert.ok(since(releasedAtMs) < wakeWithinMs, `woken ${Math.round(since(releasedAtMs))} ms after the release`);
    claimedOf(await again(store, request), 'the re-read after the wake');
    watch.close();
  });

  test(`keeps a completion that lands between watch() and next(): next() answers 'changed' within ${wakeWithinMs} ms`, async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const watch = await trackedWatch(scope, request.scope, request.key);
    await store.complete(owner.lease, { replayable: true, response: sampleResponse() });
    const completedAtMs = performance.now();
    assert.equal(await watch.next(LONG_WAIT_MS), 'changed', 'a completion before next() is not missed');
    assert.ok(since(completedAtMs) < wakeWithinMs, `woken ${Math.round(since(completedAtMs))} ms after the completion`);
    watch.close();
  });

  const nothing = capabilities.spuriousWakeups
    ? `never outlasts next(${SHORT_WAIT_MS}) (spurious wakes allowed)`
    : `answers 'timeout' after about ${SHORT_WAIT_MS} ms when nothing happens to its key (another key completes meanwhile)`;
  test(
    `${nothing}, again on a second next(), and still wakes on a change after that`,
    async (scope) => {
      const { store } = scope;
      const request = newRequest();
      const owner = claimedOf(await store.claim(request), 'a new key');
      const neighbour = newRequest({ scope: request.scope });
      const neighbourOwner = claimedOf(await store.claim(neighbour), 'another key of the same scope');
      const watch = await trackedWatch(scope, request.scope, request.key);
      for (const round of ['first', 'second']) {
        const startedMs = performance.now();
        const waiting = watch.next(SHORT_WAIT_MS);
        if (round === 'first') await store.complete(neighbourOwner.lease, { replayable: true, response: sampleResponse() });
        const result = await waiting;
        const tookMs = since(startedMs);
        assert.ok(tookMs < SHORT_WAIT_MS + LATE_MS, `the ${round} next(${SHORT_WAIT_MS}) answered after ${Math.round(tookMs)} ms`);
        if (!capabilities.spuriousWakeups) assert.equal(result, 'timeout', `the ${round} next(${SHORT_WAIT_MS}) with nothing changed`);
        if (result === 'timeout') assert.ok(tookMs >= SHORT_WAIT_MS - EARLY_MS, `the ${round} 'timeout' came after only ${Math.round(tookMs)} ms`);
      }
      const woken = watch.next(LONG_WAIT_MS);
      const completedAtMs = performance.now();
      await store.complete(owner.lease, { replayable: true, response: sampleResponse() });
      assert.equal(await woken, 'changed', 'the watcher still wakes after its timeouts');
      assert.ok(since(completedAtMs) < wakeWithinMs, `woken ${Math.round(since(completedAtMs))} ms after the completion`);
      watch.close();
    },
    2 * SHORT_WAIT_MS + 2 * LATE_MS,
  );

  test(`wakes the watchers of ${MANY_KEYS} keys waiting at once, each within ${wakeWithinMs} ms of the completions (past what a store announces, by polling)`, async (scope) => {
    const { store } = scope;
    const requests = Array.from({ length: MANY_KEYS }, () => newRequest());
    const owners = [];
    for (const request of requests) owners.push(claimedOf(await store.claim(request), 'a new key'));
    const watches = [];
    for (const request of requests) watches.push(await trackedWatch(scope, request.scope, request.key));
    for (const owner of owners) await store.complete(owner.lease, { replayable: true, response: sampleResponse() });
    const completedAtMs = performance.now();
    const woken = await Promise.all(watches.map((watch) => watch.next(LONG_WAIT_MS)));
    assert.deepEqual(
      woken,
      Array.from({ length: MANY_KEYS }, () => 'changed'),
      'every watcher learns of its completion',
    );
    assert.ok(since(completedAtMs) < wakeWithinMs, `the last watcher woken ${Math.round(since(completedAtMs))} ms after the completions`);
    for (const watch of watches) watch.close();
  });

  test(`close() is idempotent: closing a watcher twice neither throws nor withdraws another watcher of the same key (woken within ${wakeWithinMs} ms)`, async (scope) => {
    const { store } = scope;
    const request = newRequest();
    const owner = claimedOf(await store.claim(request), 'a new key');
    const closedTwice = await store.watch(request.scope, request.key);
    const other = await trackedWatch(scope, request.scope, request.key);
    closedTwice.close();
    closedTwice.close();
    // close() returns nothing to wait for: give whatever it set off a moment to land.
    await sleep(100);
    const woken = other.next(LONG_WAIT_MS);
    const completedAtMs = performance.now();
    await store.complete(owner.lease, { replayable: true, response: sampleResponse() });
    assert.equal(await woken, 'changed', 'the other watcher is woken by the completion');
    assert.ok(since(completedAtMs) < wakeWithinMs, `the other watcher woken ${Math.round(since(completedAtMs))} ms after the completion`);
    other.close();
    other.close();
  });
}
