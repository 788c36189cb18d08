import type { IdempotencyStore } from '../store/types.js';

/**
 * What a caller hands to `storeConformance()`: its test framework's functions, a way to open the store
 * under test, and what that store can do. Nothing here depends on a particular test framework.
 */

/** A store opened for the suite, and how to give back what opening it took. */
export interface OpenedStore {
  store: IdempotencyStore;
  /** Closes what `open()` opened (the store, its connections). Called once per `open()`. */
  close(): Promise<void>;
}

/** What the store under test can do; every flag defaults to the demanding answer. */
export interface StoreCapabilities {
  /**
   * The store supports transactional mode: `claimInTransaction()` opens a transaction whose `db` runs SQL
   * (and refuses to end it, and is revoked once the claim's commit() or rollback() begins: the handler's capability).
   * `false` for a store without one; the suite then requires that `claimInTransaction()` rejects (the
   * middleware answers `503` and never runs the handler) instead of returning a claim it cannot honour.
   * @default true
   */
  transactions: boolean;
  /**
   * Two transactional claims can be open at the same time (a pool of connections). `false` for a store
   * on one connection, such as PGlite, where a second transaction waits for the first to end: the cases
   * that hold two transactions at once (the `busy` claim) are then not registered. Ignored when
   * `transactions` is false.
   * @default true
   */
  concurrentTransactions: boolean;
  /**
   * How late after a lease's end the store may still refuse a takeover, in milliseconds: the suite waits
   * the lease plus this before it expects the takeover (and stays this far before the end when it expects
   * none).
   * @default 100
   */
  leasePrecisionMs: number;
  /**
   * How late after a record's expiry (`ttlSeconds` after its completion) the store may still return it,
   * in milliseconds: the suite waits the TTL plus this before it expects the key to be free again, and
   * expects the record to be there at most `ttlSeconds * 1000 - ttlPrecisionMs` after the completion.
   * Must stay below 700 (the suite's TTLs are one second).
   * @default 300
   */
  ttlPrecisionMs: number;
  /**
   * The longest time a watcher may take to learn of a change of its key (a completion, a release, a
   * commit or a rollback), in milliseconds.
   * @default 2000
   */
  wakeWithinMs: number;
  /**
   * `ChangeWatch.next()` may resolve `'changed'` when nothing changed, as a polling store's does at every
   * poll (the contract allows it: the caller re-reads the record). The suite then no longer requires a
   * `'timeout'` from a watcher whose key did not change, only that `next(timeoutMs)` never outlasts
   * `timeoutMs`.
   * @default false
   */
  spuriousWakeups: boolean;
}

/** The caller's side of the suite. The function signatures are those of vitest and jest. */
export interface ConformanceSuite {
  /**
   * Title of the outermost `describe`.
   * @default 'IdempotencyStore conformance'
   */
  name?: string;
  /** The framework's `describe`; the suite calls it with a synchronous body. */
  describe: (name: string, body: () => void) => void;
  /**
   * The framework's `it` (or `test`). `timeoutMs` is the case's own bound, which leaves room for its waits;
   * vitest and jest take it as the third argument (with node:test, pass
   * `(name, run, timeoutMs) => it(name, { timeout: timeoutMs }, run)`).
   */
  it: (name: string, run: () => Promise<void>, timeoutMs: number) => void;
  /**
   * The framework's `beforeAll` (node:test: `before`). Given together with `afterAll`, ONE store is opened
   * for all the cases (every case uses keys and scopes of its own). Without both hooks, each case opens a
   * store of its own and closes it at its end.
   * @default undefined (a store per case)
   */
  beforeAll?: (fn: () => Promise<void>, timeoutMs?: number) => void;
  /**
   * The framework's `afterAll` (node:test: `after`); see `beforeAll`.
   * @default undefined (a store per case)
   */
  afterAll?: (fn: () => Promise<void>, timeoutMs?: number) => void;
  /** Opens the store under test, ready to claim (migrated). */
  open: () => Promise<OpenedStore>;
  /**
   * What the store can do; a flag left out takes its default (see `StoreCapabilities`).
   * @default {} (every capability at its default)
   */
  capabilities?: Partial<StoreCapabilities>;
  /**
   * The bound of each case, in milliseconds, on top of the waits the case itself makes.
   * @default 10000
   */
  caseTimeoutMs?: number;
}

export const DEFAULT_SUITE_NAME = 'IdempotencyStore conformance';
export const DEFAULT_CASE_TIMEOUT_MS = 10_000;

export const DEFAULT_CAPABILITIES: Readonly<StoreCapabilities> = Object.freeze({
  transactions: true,
  concurrentTransactions: true,
  leasePrecisionMs: 100,
  ttlPrecisionMs: 300,
  wakeWithinMs: 2_000,
  spuriousWakeups: false,
});

/** The capabilities with their defaults filled in, checked so that a typo fails at once rather than as a flaky case. */
export function resolveCapabilities(given: Partial<StoreCapabilities> = {}): StoreCapabilities {
  const capabilities = { ...DEFAULT_CAPABILITIES, ...definedOnly(given) };
  for (const name of ['leasePrecisionMs', 'ttlPrecisionMs', 'wakeWithinMs'] as const) {
    const value = capabilities[name];
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`storeConformance: capabilities.${name} must be zero or a positive number; got ${value}`);
  }
  if (capabilities.ttlPrecisionMs >= 700) throw new TypeError(`storeConformance: capabilities.ttlPrecisionMs must stay below 700; got ${capabilities.ttlPrecisionMs}`);
  // Without transactions there is nothing to run concurrently.
  return capabilities.transactions ? capabilities : { ...capabilities, concurrentTransactions: false };
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as Partial<T>;
}
