import { setTimeout as sleep } from 'node:timers/promises';
import { FencedError } from '../errors.js';
import type { Completion, IdempotencyStore, Lease } from '../store/types.js';

/**
 * Lease mode's hold on a claim, from the claim to its completion: the lease is renewed while the handler
 * runs and while the completion is retried, until it lands or is fenced.
 */

/**
 * Keeps a lease alive while the handler runs: renewed every `leaseMs / 3`, so two renewals can fail
 * before the lease lapses. The timer never keeps the process alive. A lost lease (another worker took
 * over) stops the renewals; the completion will then be refused by the fence.
 */
export function keepLeaseAlive(store: IdempotencyStore, lease: Lease, leaseMs: number): { stop(): void } {
  const timer = setInterval(
    () => {
      store.renewLease(lease, leaseMs).then(
        (owned) => {
          if (!owned) clearInterval(timer);
        },
        () => undefined, // a failed renewal is retried at the next tick
      );
    },
    Math.max(1, Math.floor(leaseMs / 3)),
  );
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Pauses before the second and third completion attempts in lease mode. After the handler ran, a lost
 * completion leaves the record in progress until its lease lapses, and the client's retry then runs
 * the operation again; a couple of quick retries ride out a dropped connection or a failover.
 */
export const COMPLETION_RETRY_DELAYS_MS: readonly number[] = [250, 500];

/**
 * Stores the outcome of a leased operation, retrying transient failures. A FencedError is final: another
 * worker owns the record. Re-running a completion is safe: the store accepts it from the same fence only.
 */
export async function completeLeased(store: IdempotencyStore, lease: Lease, completion: Completion): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await store.complete(lease, completion);
    } catch (error) {
      const delayMs = COMPLETION_RETRY_DELAYS_MS[attempt];
      if (error instanceof FencedError || delayMs === undefined) throw error;
      await sleep(delayMs);
    }
  }
}
