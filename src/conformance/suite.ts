import type { CaseContext, CaseScope } from './case-context.js';
import { claimCases } from './claim-cases.js';
import { completionCases } from './completion-cases.js';
import { leaseCases } from './lease-cases.js';
import { DEFAULT_CASE_TIMEOUT_MS, DEFAULT_SUITE_NAME, resolveCapabilities, type ConformanceSuite, type OpenedStore } from './options.js';
import { transactionCases } from './transaction-cases.js';
import { transactionalDbCases } from './transactional-db-cases.js';
import { watchCases } from './watch-cases.js';

/**
 * The conformance suite of the store contract (`IdempotencyStore`): every behaviour the middleware relies
 * on, registered as cases of the caller's test framework. A store that passes can be given to
 * `idempotency({ store })`.
 *
 * ```ts
 * import { afterAll, beforeAll, describe, it } from 'vitest';
 * import { storeConformance } from 'koa-idempotency/conformance';
 *
 * storeConformance({ describe, it, beforeAll, afterAll, open: async () => ({ store: myStore, close: async () => {} }) });
 * ```
 *
 * Cases use keys and scopes of their own, so one store serves them all. Assertions are `node:assert/strict`'s.
 * A store must throw the package's own `FencedError` (`import { FencedError } from 'koa-idempotency'`).
 */
export function storeConformance(suite: ConformanceSuite): void {
  const capabilities = resolveCapabilities(suite.capabilities);
  const caseTimeoutMs = suite.caseTimeoutMs ?? DEFAULT_CASE_TIMEOUT_MS;
  const stores = storeLifecycle(suite);
  suite.describe(suite.name ?? DEFAULT_SUITE_NAME, () => {
    stores.register();
    const context: CaseContext = {
      capabilities,
      test: (name, run, waitsMs = 0) => suite.it(name, () => stores.use(run), caseTimeoutMs + waitsMs),
    };
    suite.describe('claim()', () => claimCases(context));
    suite.describe('complete() and release()', () => completionCases(context));
    suite.describe('leases and fencing: renewLease(), saveStep() and takeovers', () => leaseCases(context));
    suite.describe('claimInTransaction()', () => transactionCases(context));
    // Without transactions there is no handler's db to test, and an empty describe fails in vitest and jest.
    if (capabilities.transactions) suite.describe("claimInTransaction(): the handler's db", () => transactionalDbCases(context));
    suite.describe('watch()', () => watchCases(context));
  });
}

/** One store for all the cases when the caller gave both hooks, else one per case. */
function storeLifecycle(suite: ConformanceSuite): { register(): void; use(run: (scope: CaseScope) => Promise<void>): Promise<void> } {
  const { beforeAll, afterAll } = suite;
  if (!beforeAll || !afterAll) {
    return {
      register: () => undefined,
      use: async (run) => {
        const opened = await suite.open();
        try {
          await runCase(opened, run);
        } finally {
          await opened.close();
        }
      },
    };
  }
  let shared: OpenedStore | undefined;
  return {
    register: () => {
      beforeAll(async () => {
        shared = await suite.open();
      });
      afterAll(async () => {
        await shared?.close();
        shared = undefined;
      });
    },
    use: (run) => {
      if (!shared) throw new Error('storeConformance: the store is not open (did beforeAll run, and did open() succeed?)');
      return runCase(shared, run);
    },
  };
}

/** Runs one case, then its deferred cleanups (last first), whether it passed or not. */
async function runCase(opened: OpenedStore, run: (scope: CaseScope) => Promise<void>): Promise<void> {
  const cleanups: (() => unknown)[] = [];
  try {
    await run({ store: opened.store, defer: (cleanup) => cleanups.push(cleanup) });
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // A cleanup after a failure must not hide the failure.
      }
    }
  }
}
