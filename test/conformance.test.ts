import { AssertionError } from 'node:assert';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeConformance, type ConformanceSuite, type StoreCapabilities } from '../src/conformance/index.js';
import { FencedError, type IdempotencyStore } from '../src/index.js';
import { type PostgresStoreOptions } from '../src/entries/postgres.js';
import { databaseTargets, type DatabaseTarget, type TestDatabase } from './helpers/databases.js';

/**
 * The shipped PostgresStore passes the store conformance suite on both databases and both table layouts
 * (and with the polling wait strategy); and the suite can fail: a store broken on purpose fails the case
 * that covers what was broken, while the same case passes on the intact store.
 */

const layouts = [
  { layout: 'a plain table', partitioning: false },
  { layout: 'a table partitioned by time', partitioning: { intervalSeconds: 3600 } },
];

const targets = databaseTargets();

for (const target of targets) {
  for (const { layout, partitioning } of layouts) {
    storeConformanceOf(`PostgresStore on ${target.name}, ${layout}`, target, { partitioning });
  }
}

// The polling wait strategy (for a transaction-pooling PgBouncer): its watchers wake at every poll.
const server = targets.find((target) => target.name === 'Postgres server')!;
storeConformanceOf(
  `PostgresStore on ${server.name}, a plain table, waitStrategy 'poll'`,
  server,
  { waitStrategy: 'poll', pollIntervalMs: 100 },
  { spuriousWakeups: true },
);

function storeConformanceOf(
  name: string,
  target: DatabaseTarget,
  options: Omit<PostgresStoreOptions, 'pool' | 'pglite' | 'database' | 'schema'>,
  capabilities: Partial<StoreCapabilities> = {},
): void {
  storeConformance({
    name,
    describe,
    it,
    beforeAll,
    afterAll,
    async open() {
      const db = await target.open('conformance');
      // No replay cache: every claim reaches SQL.
      const store = await db.store({ replayCacheEntries: 0, ...options });
      return { store, close: () => db.close() };
    },
    // PGlite is one connection: a second transaction waits for the first to end.
    capabilities: { concurrentTransactions: target.name !== 'PGlite', ...capabilities },
  });
}

/** The cases of the suite by their full name, registered through a `describe` and an `it` that only collect. */
function collectCases(suite: Omit<ConformanceSuite, 'describe' | 'it'>): Map<string, () => Promise<void>> {
  const cases = new Map<string, () => Promise<void>>();
  const path: string[] = [];
  storeConformance({
    ...suite,
    describe: (name, body) => {
      path.push(name);
      body();
      path.pop();
    },
    it: (name, run) => {
      cases.set([...path, name].join(' > '), run);
    },
  });
  return cases;
}

function caseNamed(cases: Map<string, () => Promise<void>>, fragment: string): () => Promise<void> {
  const matches = [...cases.entries()].filter(([name]) => name.includes(fragment));
  expect(matches.map(([name]) => name)).toHaveLength(1);
  return matches[0]![1];
}

/** Every primitive passed through to `store`, except those overridden. */
function wrap(store: IdempotencyStore, overrides: Partial<IdempotencyStore>): IdempotencyStore {
  return {
    claim: (request) => store.claim(request),
    claimInTransaction: (request) => store.claimInTransaction(request),
    complete: (lease, completion) => store.complete(lease, completion),
    release: (lease) => store.release(lease),
    renewLease: (lease, leaseMs) => store.renewLease(lease, leaseMs),
    saveStep: (lease, name, result, db) => store.saveStep(lease, name, result, db),
    watch: (scope, key) => store.watch(scope, key),
    ...overrides,
  };
}

/** Stores broken on purpose, each with the case that must catch it. */
const brokenStores: { broken: string; caseName: string; message: RegExp; breaking: (store: IdempotencyStore) => Partial<IdempotencyStore> }[] = [
  {
    broken: 'complete() ignores the fence (a late owner overwrites the takeover)',
    caseName: 'lets the same request take over a lapsed lease',
    message: /complete\(\)/,
    breaking: (store) => ({
      complete: async (lease, completion) => {
        await store.complete(lease, completion).catch((error: unknown) => {
          if (!(error instanceof FencedError)) throw error;
        });
      },
    }),
  },
  {
    broken: 'claim() ignores the scope',
    caseName: 'independent record',
    message: /another scope/,
    breaking: (store) => ({ claim: (request) => store.claim({ ...request, scope: 'one-scope-for-all' }) }),
  },
  {
    broken: 'release() deletes nothing',
    caseName: 'release() deletes the owned record',
    message: /the released key/,
    breaking: () => ({ release: async () => undefined }),
  },
  {
    broken: 'renewLease() does not renew',
    caseName: 'renewLease() returns true while',
    message: /a retry after the first lease would have ended/,
    breaking: () => ({ renewLease: async () => true }),
  },
  {
    broken: "claimInTransaction() hands out a db whose commit() commits the claim's transaction",
    caseName: 'db.commit() throws a TransactionControlError',
    message: /db\.commit\(\) throws a TransactionControlError/,
    breaking: (store) => ({
      claimInTransaction: async (request) => {
        const claim = await store.claimInTransaction(request);
        if (claim.kind !== 'claimed') return claim;
        return { ...claim, db: { ...claim.db, commit: () => claim.commit({ replayable: false, status: 200 }) } as unknown as typeof claim.db };
      },
    }),
  },
  {
    broken: 'watch() never wakes before its timeout',
    caseName: 'wakes a watcher within',
    message: /woken by the release/,
    breaking: () => ({
      watch: async () => ({ next: (timeoutMs) => new Promise((resolve) => setTimeout(() => resolve('timeout'), timeoutMs)), close: () => undefined }),
    }),
  },
];

describe('the conformance suite can fail', () => {
  const pglite = targets.find((target) => target.name === 'PGlite')!;
  let db: TestDatabase;
  let store: IdempotencyStore;

  beforeAll(async () => {
    db = await pglite.open('conformance_negative');
    store = await db.store({ replayCacheEntries: 0 });
  });
  afterAll(() => db?.close());

  const suiteOf = (getStore: () => IdempotencyStore) =>
    collectCases({ capabilities: { concurrentTransactions: false }, open: async () => ({ store: getStore(), close: async () => undefined }) });

  it.each(brokenStores)('fails the case that covers it when $broken, and passes it on the intact store', async ({ caseName, message, breaking }) => {
    await expect(
      caseNamed(
        suiteOf(() => store),
        caseName,
      )(),
    ).resolves.toBeUndefined();
    const failure = caseNamed(
      suiteOf(() => wrap(store, breaking(store))),
      caseName,
    )();
    await expect(failure).rejects.toBeInstanceOf(AssertionError);
    await expect(failure).rejects.toThrow(message);
  });

  it('registers the cases of the capabilities given: busy claims only with concurrent transactions, a refusal without transactions', () => {
    const open = async () => ({ store, close: async () => undefined });
    const names = (capabilities: Partial<StoreCapabilities>) => [...collectCases({ open, capabilities }).keys()];
    expect(names({}).filter((name) => name.includes('answers busy'))).toHaveLength(2);
    expect(names({ concurrentTransactions: false }).filter((name) => name.includes('answers busy'))).toHaveLength(0);
    const withoutTransactions = names({ transactions: false }).filter((name) => name.includes('claimInTransaction()'));
    expect(withoutTransactions).toHaveLength(1);
    expect(withoutTransactions[0]).toContain('refuses a transactional claim');
  });

  it('refuses capabilities that would make the suite meaningless', () => {
    const open = async () => ({ store, close: async () => undefined });
    expect(() => collectCases({ open, capabilities: { ttlPrecisionMs: 900 } })).toThrow(TypeError);
    expect(() => collectCases({ open, capabilities: { wakeWithinMs: -1 } })).toThrow(TypeError);
  });
});
