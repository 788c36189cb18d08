import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotentFetchError, idempotentFetch, type IdempotentFetchOptions } from '../../src/entries/client.js';
import { fullJitterDelayMs } from '../../src/client/backoff.js';
import { RetrySchedule, type RetryPolicy } from '../../src/client/schedule.js';
import { libraryProblem, notNow, startScriptedServer, type ScriptedServer, type Step } from '../helpers/scripted-server.js';

/**
 * Properties of idempotentFetch, checked with fast-check: the retry schedule never runs past its deadline
 * (on a simulated clock, so the arithmetic is exact), and against a real scripted server every attempt of a
 * call carries the same key, whatever the server does.
 */

const policies: fc.Arbitrary<RetryPolicy> = fc
  .record({
    maxAttempts: fc.integer({ min: 1, max: 12 }),
    baseDelayMs: fc.integer({ min: 0, max: 2_000 }),
    extraDelayMs: fc.integer({ min: 0, max: 20_000 }),
    deadlineMs: fc.integer({ min: 1, max: 60_000 }),
    attemptTimeoutMs: fc.integer({ min: 1, max: 20_000 }),
  })
  .map(({ extraDelayMs, ...policy }) => ({ ...policy, maxDelayMs: policy.baseDelayMs + extraDelayMs }));

/** One attempt as the clock sees it: how long it ran (a hang runs its whole budget) and what it got. */
const simulatedAttempts = fc.array(
  fc.record({
    durationMs: fc.oneof(fc.integer({ min: 0, max: 30_000 }), fc.constant(Number.POSITIVE_INFINITY)),
    final: fc.boolean(),
    retryAfterMs: fc.option(fc.integer({ min: 0, max: 120_000 }), { nil: undefined }),
    inProgress: fc.boolean(),
    /** How late the wait's timer fires after this attempt. */
    lateMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 50 })),
  }),
  { minLength: 1, maxLength: 15 },
);

const randoms = fc.infiniteStream(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }));

describe('the retry schedule, on a simulated clock', () => {
  it('never starts an attempt at or after the deadline, nor lets one run past it, nor waits past it', () => {
    fc.assert(
      fc.property(policies, simulatedAttempts, randoms, (policy, attempts, stream) => {
        const random = () => stream.next().value as number;
        const schedule = new RetrySchedule(policy, random, 0);
        const deadlineMs = policy.deadlineMs;
        let nowMs = 0;
        for (let index = 0; ; index++) {
          const attempt = attempts[index % attempts.length]!;
          const budgetMs = schedule.startAttempt(nowMs);
          if (budgetMs === undefined) {
            expect(nowMs).toBeGreaterThanOrEqual(deadlineMs); // only a late timer gets here
            break;
          }
          expect(nowMs).toBeLessThan(deadlineMs);
          expect(budgetMs).toBeGreaterThan(0);
          expect(budgetMs).toBeLessThanOrEqual(policy.attemptTimeoutMs);
          nowMs += Math.min(attempt.durationMs, budgetMs); // the attempt's timer ends it at its budget
          expect(nowMs).toBeLessThanOrEqual(deadlineMs);

          const decision = schedule.afterAttempt(attempt.final ? undefined : { retryAfterMs: attempt.retryAfterMs, inProgress: attempt.inProgress }, nowMs);
          if (!decision.retry) {
            expect(decision.stoppedBy).toBe(attempt.final ? 'answer' : schedule.countedAttempts >= policy.maxAttempts ? 'attempts' : 'deadline');
            break;
          }
          // The exponent stops at 52 as backoff.ts's does: 409s, which do not count, can run past 1024 attempts
          // when no time passes (maxDelayMs 0), where 0 * 2 ** 1024 is NaN.
          const capMs = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(schedule.attempts - 1, 52));
          const halfLeftMs = Math.floor((deadlineMs - nowMs) / 2);
          expect(decision.delayMs).toBeGreaterThanOrEqual(0);
          expect(decision.delayMs).toBeLessThanOrEqual(halfLeftMs);
          if (attempt.inProgress) {
            // A 409's estimate (or our backoff), capped at maxDelayMs, never under baseDelayMs, cut to half of what is left.
            const floorMs = Math.max(policy.baseDelayMs, Math.min(1_000, policy.maxDelayMs));
            const wantedMs = Math.max(Math.min(attempt.retryAfterMs ?? capMs, policy.maxDelayMs), floorMs);
            expect(decision.delayMs).toBeLessThanOrEqual(wantedMs);
            if (attempt.retryAfterMs !== undefined) {
              expect(decision.delayMs).toBe(Math.min(wantedMs, halfLeftMs));
              // Cut, never below a second (Retry-After's own resolution) nor below what was wanted.
              expect(decision.delayMs).toBeGreaterThanOrEqual(Math.min(wantedMs, 1_000));
            }
          } else if (attempt.retryAfterMs === undefined) {
            expect(decision.delayMs).toBeLessThanOrEqual(capMs);
          } else {
            // A 429's or 503's "not before", waited in full.
            expect(decision.delayMs).toBe(attempt.retryAfterMs);
          }
          nowMs += decision.delayMs;
          expect(nowMs).toBeLessThan(deadlineMs); // a wait ends before the deadline, leaving time to try
          nowMs += attempt.lateMs;
        }
        expect(schedule.attempts).toBeGreaterThanOrEqual(1);
        expect(schedule.countedAttempts).toBeLessThanOrEqual(policy.maxAttempts);
      }),
      { numRuns: 3_000 },
    );
  });

  it('draws each backoff wait from [0, min(max, base * 2^(n-1))), whole milliseconds', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2_000 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 60_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (retry, baseDelayMs, extraMs, fraction) => {
          const maxDelayMs = baseDelayMs + extraMs;
          const delayMs = fullJitterDelayMs(retry, baseDelayMs, maxDelayMs, () => fraction);
          const capMs = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(retry - 1, 52));
          expect(Number.isInteger(delayMs)).toBe(true);
          expect(delayMs).toBeGreaterThanOrEqual(0);
          expect(delayMs).toBeLessThanOrEqual(Math.max(0, capMs));
          if (capMs > 0) expect(delayMs).toBeLessThan(capMs);
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

describe('idempotentFetch against a scripted server', () => {
  let scripted: ScriptedServer;
  beforeAll(async () => {
    scripted = await startScriptedServer();
  });
  afterAll(async () => {
    await scripted?.close();
  });

  /** What a retry can fix, and answers it cannot change (success included). */
  const notNowSteps: fc.Arbitrary<Step> = fc.constantFrom<Step>('reset', 'hang', notNow(503, '0'), notNow(502), notNow(429), libraryProblem('inProgress', '0'));
  const finalSteps: fc.Arbitrary<Step> = fc.constantFrom<Step>(
    { status: 201 },
    { status: 200, headers: { 'idempotent-replayed': 'true' } },
    { status: 400 },
    libraryProblem('keyReused'),
    libraryProblem('notReplayable'),
  );
  const scripts = fc
    .tuple(fc.array(notNowSteps, { maxLength: 6 }), fc.option(finalSteps, { nil: undefined }))
    .map(([steps, final]): Step[] => (final ? [...steps, final] : steps.length > 0 ? steps : ['reset']));
  const keys = fc.oneof(
    fc.constant(undefined),
    fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/),
    fc.constantFrom('ledger-entry', 'refund').map((label) => ({ from: { deriveKey: (l: string) => `derived:${l}` }, label })),
  );

  it('sends the same key on every attempt of a call, and makes no more attempts than allowed', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(scripts, keys, fc.integer({ min: 1, max: 6 }), async (script, key, maxAttempts) => {
        scripted.script(script);
        // Each call's body is its own: an attempt of an earlier call that its timeout abandoned on the way may
        // still reach the server during this one, and must not be counted as this call's.
        const body = JSON.stringify({ amount: 1, run: ++run });
        const options: IdempotentFetchOptions = { key, maxAttempts, baseDelayMs: 1, maxDelayMs: 4, attemptTimeoutMs: 150, deadlineMs: 1_000 };
        const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body };
        const outcome = await idempotentFetch(scripted.url, init, options).catch((error: unknown) => error as IdempotentFetchError);
        const sentKey = outcome.key;
        const attempts = outcome.attempts;

        if (typeof key === 'string') expect(sentKey).toBe(key);
        if (typeof key === 'object') expect(sentKey).toBe(`derived:${key.label}`);
        // Every answered attempt reached the server; one that timed out may not have (on a loaded machine, 150 ms
        // can pass before the request is written), or may still be on its way.
        const received = () => scripted.requests.filter((request) => request.body === body);
        const answered = outcome.history.filter((attempt) => attempt.status !== undefined).length;
        await expect.poll(() => received().length).toBeGreaterThanOrEqual(answered);
        expect(received().length).toBeLessThanOrEqual(attempts);
        expect(received().map((request) => request.headers['idempotency-key'])).toEqual(Array(received().length).fill(sentKey));
        // Attempts answered 409 in progress do not count (waiting for a running operation is bounded by the deadline).
        const inProgress = outcome.history.filter((attempt) => attempt.status === 409).length;
        expect(Math.max(1, attempts - inProgress)).toBeLessThanOrEqual(maxAttempts);
        if (!(outcome instanceof IdempotentFetchError) && outcome.stoppedBy === 'answer') {
          expect([200, 201, 400, 409, 422]).toContain(outcome.status);
        }
      }),
      { numRuns: 40 },
    );
  });
});
