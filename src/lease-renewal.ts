import type { IdempotencyStore, Lease } from './store/types.js';

/**
 * Keeps a lease alive while the handler runs: renewed every `leaseMs / 3`, so two renewals can fail
 * before the lease lapses. The timer never keeps the process alive. A lost lease (another worker took
 * over) stops the renewals; the completion will then be refused by the fence.
 */
export function keepLeaseAlive(store: IdempotencyStore, lease: Lease, leaseMs: number): { stop(): void } {
  const timer = setInterval(() => {
    store.renewLease(lease, leaseMs).then(
      (owned) => {
        if (!owned) clearInterval(timer);
      },
      () => undefined, // a failed renewal is retried at the next tick
    );
  }, Math.max(1, Math.floor(leaseMs / 3)));
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
