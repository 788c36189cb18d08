import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { IdempotencyStore } from '../../src/index.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, until } from '../helpers/events.js';

/**
 * Lease mode: the owner is alive but slow and its renewals stop (a frozen process: GC pause, a stalled event loop
 * for its timers), its lease lapses, a retry takes the key over and completes, then the original owner wakes up
 * and completes too. Guarantee: one stored response (the taker's), the late owner's completion fenced, every later
 * retry replays the taker's response; a waiting duplicate (onInProgress 'wait') takes over, not a third execution.
 */

const LEASE_MS = 400;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

describe.each(databaseTargets())('lease takeover while the first owner is still alive on $name', (target) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await target.open('attack_fence');
  });
  afterAll(() => db?.close());
  const lateAnswers = new Map<string, { status: number; body: string }>();

  for (const mode of ['reject', 'wait'] as const) {
    it(`stores only the taker's response and fences the late owner (onInProgress '${mode}')`, async () => {
      const store = await db.store({ replayCacheEntries: 0 });
      const frozen = new Set<string>();
      const completions: Array<{ fence: unknown; ok: boolean; error?: string }> = [];
      // The first owner's renewals never reach the store (its process is frozen), everything else is the real store.
      const frozenFirst: IdempotencyStore = {
        claim: async (r) => {
          const result = await store.claim(r);
          if (result.kind === 'claimed' && frozen.size === 0) frozen.add(result.lease.fence);
          return result;
        },
        claimInTransaction: (r) => store.claimInTransaction(r),
        complete: async (lease, completion) => {
          try {
            await store.complete(lease, completion);
            completions.push({ fence: lease.fence, ok: true });
          } catch (error) {
            completions.push({ fence: lease.fence, ok: false, error: (error as Error).name });
            throw error;
          }
        },
        release: (lease) => store.release(lease),
        renewLease: async (lease, leaseMs) => (frozen.has(lease.fence) ? true : store.renewLease(lease, leaseMs)),
        saveStep: (lease, name, result, d) => store.saveStep(lease, name, result, d),
        watch: (scope, key) => store.watch(scope, key),
      };
      const resume = signal();
      const firstStarted = signal();
      const server = await waiterApp({ store: frozenFirst, leaseMs: LEASE_MS, onInProgress: mode, waitMs: 5_000 }, async (_ctx, execution) => {
        if (execution === 1) {
          firstStarted.fire();
          await resume.promise;
        }
      });
      closers.push(async () => {
        resume.fire();
        await server.close();
      });
      const key = `fence-${mode}-${Date.now()}`;
      const first = post(server.url, key);
      await firstStarted.promise;
      // Observable: the record's lease has lapsed.
      await until(async () => {
        const record = await store.find('', key);
        return record && record.leaseRemainingMs <= 0 ? true : undefined;
      }, 'the first lease to lapse');
      const taker = await post(server.url, key);
      expect(taker.status).toBe(201);
      expect(JSON.parse(taker.body)).toEqual({ execution: 2 });
      resume.fire();
      const late = await first;
      const record = await store.find('', key);
      const replay = await post(server.url, key);
      console.info(`[fence ${target.name} ${mode}] late owner answered`, late.status, late.body, 'completions', JSON.stringify(completions));
      expect(record?.status).toBe('completed');
      expect(replay).toMatchObject({ status: 201, replayed: true });
      expect(JSON.parse(replay.body)).toEqual({ execution: 2 });
      // The late owner's completion was refused, the taker's accepted.
      expect(completions.filter((c) => c.ok)).toHaveLength(1);
      expect(completions.some((c) => c.error === 'FencedError')).toBe(true);
      lateAnswers.set(mode, late);
    });

    it(`does not tell the late (fenced) owner's client a success other than the one stored for the key (onInProgress '${mode}')`, () => {
      const late = lateAnswers.get(mode);
      expect(late, 'the scenario above ran').toBeDefined();
      // The key's replay says execution 2 forever; the first client was told execution 1 succeeded (a 201 the key
      // will never replay). Expected: the stored response (replayed) or a problem, not a contradicting success.
      expect({ status: late!.status, body: late!.body }).not.toEqual({ status: 201, body: '{"execution":1}' });
    });
  }
});
