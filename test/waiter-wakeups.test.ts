import { randomBytes, randomInt } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type IdempotencyOptions } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, uniqueSchema, type TestDatabase } from './helpers/databases.js';
import { observedStore, post, report, waiterApp, type Handler } from './helpers/waiter-harness.js';
import { signal, until } from './helpers/events.js';

/**
 * A waiting duplicate (onInProgress: 'wait') learns of a change within a bound, whatever happens to the
 * NOTIFY that would wake it: NOTIFY is an accelerator, the waiter's own re-reads (backoff capped at
 * `waitRecheckMs`, and at the owner's lease expiry) are the guarantee. Each case measures the wake-up from
 * an observable event (the owner's answer, the lease's expiry) and prints it.
 */

/** The bound every case must meet: the re-read schedule's cap (250 ms by default) plus the re-read itself. */
const WAKE_BOUND_MS = 500;
/** The waiters' own timeout: a waiter that misses its wake-up sleeps this long. */
const WAIT_MS = 6_000;
const LEASE_MS = 1_000;
const closers: Array<() => Promise<unknown>> = [];
let keys = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keys}`;

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function app(options: Omit<IdempotencyOptions, 'store'> & { store: IdempotencyOptions['store'] }, handler: Handler) {
  const server = await waiterApp({ onInProgress: 'wait', waitMs: WAIT_MS, ...options }, handler);
  closers.push(() => server.close());
  return server;
}

describe.each(databaseTargets({ pipelined: true }))('a waiting duplicate on $name', (target) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await target.open('wakeups');
  });
  afterAll(() => db?.close());

  it(`takes over a crashed owner's key within ${WAKE_BOUND_MS} ms of its lease lapsing, not at waitMs`, async () => {
    const store = await db.store({ replayCacheEntries: 0 });
    const crashed = signal();
    const ownerStarted = signal();
    const takenOver = signal<number>();
    // The owner never renews (a crashed process does not) and never answers.
    const frozen = { ...observedStore(store).store, renewLease: async () => true };
    const server = await app({ store: frozen, leaseMs: LEASE_MS }, async (_ctx, execution) => {
      if (execution === 1) {
        ownerStarted.fire();
        await crashed.promise;
        return;
      }
      takenOver.fire(performance.now());
    });
    closers.push(async () => crashed.fire());
    const key = newKey('crash');
    void post(server.url, key).catch(() => undefined);
    await ownerStarted.promise;
    // Read before the lookup: the lease lapses no earlier than this (a conservative measure of the lateness).
    const readAtMs = performance.now();
    const record = await store.find('', key);
    const lapsesAtMs = readAtMs + record!.leaseRemainingMs;
    const waiter = post(server.url, key);
    const lateMs = (await takenOver.promise) - lapsesAtMs;
    report(`${target.name}, owner crashed: takeover after the lease lapsed`, lateMs);
    expect((await waiter).status).toBe(201);
    expect(lateMs).toBeLessThan(WAKE_BOUND_MS);
  });
});

describe.each(databaseTargets({ pipelined: true }))('a watcher on $name', (target) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await target.open('wakeups_watch');
  });
  afterAll(() => db?.close());

  // On PGlite, one session for everything, a duplicate cannot wait while a transaction is open (its own claim
  // queues behind it); a watcher registered before the transaction opened is what can miss the failed COMMIT.
  it(`learns of a transactional claim whose COMMIT failed (deferred unique violation) within ${WAKE_BOUND_MS} ms`, async () => {
    const store = await db.store({ replayCacheEntries: 0 });
    const key = newKey('watch-commit-fails');
    const watch = await store.watch('', key);
    closers.push(async () => watch.close());
    const claim = await store.claimInTransaction({ scope: '', key, fingerprint: 'fp', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3_600 });
    if (claim.kind !== 'claimed') throw new Error(`expected a claim, got ${claim.kind}`);
    await claim.db.query('CREATE TEMP TABLE commit_fails (id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP');
    await claim.db.query('INSERT INTO commit_fails VALUES (1), (1)');
    const woken = watch.next(WAIT_MS);
    // Measured from the COMMIT's start: an upper bound on the delay after its failure.
    const committingAtMs = performance.now();
    await expect(claim.commit({ replayable: true, response: { status: 201, headers: {}, body: null } })).rejects.toThrow();
    expect(await woken).toBe('changed');
    const wakeMs = performance.now() - committingAtMs;
    report(`${target.name}, failed COMMIT: the watcher woken after the COMMIT started`, wakeMs);
    expect(wakeMs).toBeLessThan(WAKE_BOUND_MS);
  });
});

describe('a waiting duplicate on the Postgres server', () => {
  const schema = uniqueSchema('wakeups_pg');
  const applicationName = `i21-wakeups-${randomBytes(4).toString('hex')}`;
  /** Advisory lock the test holds to keep a commit waiting in a deferred trigger (a slow COMMIT). */
  const gateLock = randomInt(1, 2 ** 31 - 1);
  let admin: pg.Pool;
  let appPool: pg.Pool;

  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
    admin.on('error', () => undefined);
    appPool = new pg.Pool({ connectionString: DATABASE_URL, max: 6, application_name: applicationName });
    appPool.on('error', () => undefined);
    await admin.query(`CREATE SCHEMA "${schema}"`);
    // A deferred trigger that waits for the test's lock: the COMMIT of a transaction that wrote here takes as
    // long as the test wants (as with a deferred constraint or synchronous replication).
    await admin.query(`CREATE TABLE "${schema}".slow_commit (id int)`);
    await admin.query(`CREATE FUNCTION "${schema}".wait_for_gate() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN PERFORM pg_advisory_xact_lock(${gateLock}); RETURN NULL; END $$`);
    await admin.query(`CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON "${schema}".slow_commit
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".wait_for_gate()`);
    // A deferred unique constraint: a second id 1 fails at COMMIT (23505), after the completion was written.
    await admin.query(`CREATE TABLE "${schema}".unique_at_commit (id int, CONSTRAINT one_each UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`);
    await admin.query(`INSERT INTO "${schema}".unique_at_commit VALUES (1)`);
  });
  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await Promise.all([admin.end(), appPool.end()]);
  });

  async function newStore(options: Partial<ConstructorParameters<typeof PostgresStore>[0]> = {}) {
    const store = new PostgresStore({ pool: appPool, schema, replayCacheEntries: 0, ...options });
    await store.migrate();
    closers.push(() => store.close());
    const observed = observedStore(store);
    return { store, observed };
  }

  /** The backend of the store's listening session: the one that holds a waiter's announcement. */
  async function listenerPid(): Promise<number> {
    return until(async () => {
      const { rows } = await admin.query<{ pid: number }>(
        `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted LIMIT 1`,
        [applicationName],
      );
      return rows[0]?.pid;
    }, "the listening session's announcement");
  }

  /** Whether a commit waits in the deferred trigger for the test's lock. */
  async function commitWaitsForGate(): Promise<true | undefined> {
    const { rows } = await admin.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 1 AND NOT granted`, [gateLock]);
    return rows.length > 0 ? true : undefined;
  }

  it(`is woken within ${WAKE_BOUND_MS} ms of the completion after the listening connection reconnected (re-announced on the new one)`, async () => {
    const { observed } = await newStore();
    const ownerStarted = signal();
    const complete = signal();
    const server = await app({ store: observed.store }, async (_ctx, execution) => {
      if (execution === 1) {
        ownerStarted.fire();
        await complete.promise;
      }
    });
    const key = newKey('reconnect');
    const owner = post(server.url, key);
    await ownerStarted.promise;
    const waiter = post(server.url, key);
    await observed.waiting();
    const oldPid = await listenerPid();
    await admin.query('SELECT pg_terminate_backend($1, 5000)', [oldPid]);
    await until(async () => {
      // Its last statement is the LISTEN, or a waiter's announcement right after it.
      const { rows } = await admin.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2 AND (query LIKE 'LISTEN %' OR query LIKE '%pg_try_advisory_lock_shared%')`,
        [applicationName, oldPid],
      );
      return rows.length > 0 ? true : undefined;
    }, 'the store to LISTEN on a new connection');
    // The waiter is announced again there, so the completion notifies it (not only its re-reads).
    expect(await listenerPid()).not.toBe(oldPid);
    complete.fire();
    const [first, duplicate] = await Promise.all([owner, waiter]);
    const wakeMs = duplicate.answeredAtMs - first.answeredAtMs;
    report('Postgres, listening connection reconnected: replay after the completion', wakeMs);
    expect(duplicate).toMatchObject({ status: 201, body: first.body, replayed: true });
    expect(wakeMs).toBeLessThan(WAKE_BOUND_MS);
  });

  it(`is woken within ${WAKE_BOUND_MS} ms of a COMMIT that held the key's waiter lock for longer than a second`, async () => {
    const { observed } = await newStore();
    const server = await app({ store: observed.store, transactional: true }, async (ctx, execution) => {
      if (execution === 1) await ctx.idempotency!.db!.query(`INSERT INTO "${schema}".slow_commit VALUES (1)`);
    });
    const gate = await admin.connect();
    try {
      await gate.query('SELECT pg_advisory_lock($1)', [gateLock]);
      const key = newKey('slow-commit');
      const owner = post(server.url, key);
      await until(commitWaitsForGate, "the owner's COMMIT to wait in the deferred trigger");
      const waiter = post(server.url, key);
      await observed.waiting();
      await gate.query('SELECT pg_advisory_unlock($1)', [gateLock]);
      const [first, duplicate] = await Promise.all([owner, waiter]);
      const wakeMs = duplicate.answeredAtMs - first.answeredAtMs;
      report('Postgres, slow COMMIT holding the waiter lock: replay after the commit', wakeMs);
      expect(first.status).toBe(201);
      expect(duplicate).toMatchObject({ status: 201, body: first.body, replayed: true });
      expect(wakeMs).toBeLessThan(WAKE_BOUND_MS);
    } finally {
      await gate.query('SELECT pg_advisory_unlock_all()');
      gate.release();
    }
  });

  it(`is woken within ${WAKE_BOUND_MS} ms when the owner's COMMIT fails (deferred unique violation) and runs the operation itself`, async () => {
    const { observed } = await newStore();
    const proceed = signal();
    const ownerStarted = signal();
    const server = await app({ store: observed.store, transactional: true }, async (ctx, execution) => {
      if (execution === 1) {
        ownerStarted.fire();
        await proceed.promise;
      }
      // The first execution writes an id that exists already: its COMMIT fails, after the completion was written.
      await ctx.idempotency!.db!.query(`INSERT INTO "${schema}".unique_at_commit VALUES ($1)`, [execution === 1 ? 1 : 1000 + keys]);
    });
    const key = newKey('commit-fails');
    const owner = post(server.url, key);
    await ownerStarted.promise;
    const waiter = post(server.url, key);
    await observed.waiting();
    proceed.fire();
    const [first, duplicate] = await Promise.all([owner, waiter]);
    const wakeMs = duplicate.answeredAtMs - first.answeredAtMs;
    report('Postgres, failed COMMIT: the waiter runs the operation after the failure', wakeMs);
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect(duplicate.status).toBe(201);
    expect(JSON.parse(duplicate.body)).toEqual({ execution: 2 });
    expect(wakeMs).toBeLessThan(WAKE_BOUND_MS);
  });

  it(`is woken within ${WAKE_BOUND_MS} ms when the owner's ROLLBACK throws (its connection was lost)`, async () => {
    const { observed } = await newStore();
    const proceed = signal();
    const ownerStarted = signal();
    let connectionLostAtMs = 0;
    const server = await app({ store: observed.store, transactional: true }, async (ctx, execution) => {
      if (execution > 1) return;
      ownerStarted.fire();
      await proceed.promise;
      const { rows } = await ctx.idempotency!.db!.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      // From the moment the termination is asked for: the waiter may claim the freed key before it is confirmed.
      connectionLostAtMs = performance.now();
      await admin.query('SELECT pg_terminate_backend($1, 5000)', [rows[0]!.pid]);
      throw new Error('the handler failed, and its connection is gone');
    });
    const key = newKey('rollback-throws');
    const owner = post(server.url, key);
    await ownerStarted.promise;
    const waiter = post(server.url, key);
    await observed.waiting();
    proceed.fire();
    const [first, duplicate] = await Promise.all([owner, waiter]);
    const wakeMs = duplicate.answeredAtMs - connectionLostAtMs;
    report("Postgres, ROLLBACK on a lost connection: the waiter's answer after the owner's connection was lost", wakeMs);
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect(duplicate.status).toBe(201);
    expect(wakeMs).toBeLessThan(WAKE_BOUND_MS);
  });
});
