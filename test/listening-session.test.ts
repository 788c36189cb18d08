import { randomBytes, randomInt } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, type ChangeWatch, type ClaimRequest } from '../src/index.js';
import { PostgresStore, type PostgresStoreOptions } from '../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';
import { observedStore, post, report, waiterApp } from './helpers/waiter-harness.js';
import { signal, until } from './helpers/events.js';

/**
 * The store's one listening session per process, where waiting duplicates announce themselves: it must never
 * sit in a lock wait (every waiter of the process shares it), must not hold locks without bound (Postgres'
 * shared lock table is the cluster's), and a waiter that cannot use it at all still gets its replay.
 */

const schema = uniqueSchema('listening');
const applicationName = `i21-listening-${randomBytes(4).toString('hex')}`;
/** Advisory lock the test holds to keep a commit waiting in a deferred trigger (a slow COMMIT). */
const gateLock = randomInt(1, 2 ** 31 - 1);
const closers: Array<() => Promise<unknown>> = [];
let admin: pg.Pool;
let appPool: pg.Pool;
let keys = 0;

function request(label: string): ClaimRequest {
  return { scope: 'tenant', key: `${label}-${++keys}`, fingerprint: 'fp', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3_600 };
}

const completion = { replayable: true as const, response: { status: 201, headers: {}, body: null } };

async function newStore(options: Partial<PostgresStoreOptions> = {}): Promise<PostgresStore> {
  const store = new PostgresStore({ pool: appPool, schema, replayCacheEntries: 0, ...options });
  await store.migrate();
  closers.push(() => store.close());
  return store;
}

/** Waiters' announcements held on this file's listening sessions: advisory locks with two keys (objsubid 2). */
async function announcements(): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
      WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted`,
    [applicationName],
  );
  return rows[0]!.n;
}

async function watched(store: PostgresStore, claim: ClaimRequest): Promise<ChangeWatch> {
  const watch = await store.watch(claim.scope, claim.key);
  closers.push(async () => watch.close());
  return watch;
}

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
  admin.on('error', () => undefined);
  appPool = new pg.Pool({ connectionString: DATABASE_URL, max: 4, application_name: applicationName });
  appPool.on('error', () => undefined);
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`CREATE TABLE "${schema}".slow_commit (id int)`);
  await admin.query(`CREATE FUNCTION "${schema}".wait_for_gate() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_advisory_xact_lock(${gateLock}); RETURN NULL; END $$`);
  await admin.query(`CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON "${schema}".slow_commit
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".wait_for_gate()`);
});
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await Promise.all([admin.end(), appPool.end()]);
});

describe('the listening session (Postgres server)', () => {
  it("never waits for a lock: one key's slow COMMIT does not hold up the watch() or the wake-up of another key", async () => {
    const store = await newStore();
    const gate = await admin.connect();
    try {
      await gate.query('SELECT pg_advisory_lock($1)', [gateLock]);
      const slow = request('slow');
      const claim = await store.claimInTransaction(slow);
      if (claim.kind !== 'claimed') throw new Error(`expected a claim, got ${claim.kind}`);
      await claim.db.query(`INSERT INTO "${schema}".slow_commit VALUES (1)`);
      // The completion takes the key's waiter lock, then its COMMIT waits in the deferred trigger.
      const committing = claim.commit(completion);
      await until(async () => {
        const { rows } = await admin.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 1 AND NOT granted`, [gateLock]);
        return rows.length > 0 ? true : undefined;
      }, 'the COMMIT to wait in the deferred trigger');

      const other = request('other');
      const owner = await store.claim(other);
      if (owner.kind !== 'claimed') throw new Error(`expected a claim, got ${owner.kind}`);
      const startedMs = performance.now();
      const slowWatch = await watched(store, slow);
      const otherWatch = await watched(store, other);
      const watchedMs = performance.now() - startedMs;
      const woken = otherWatch.next(5_000);
      const completedAtMs = performance.now();
      await store.complete(owner.lease, completion);
      expect(await woken).toBe('changed');
      const wokenMs = performance.now() - completedAtMs;
      report('Postgres, watch() of two keys while one COMMIT holds its waiter lock', watchedMs);
      report('Postgres, wake-up of the other key meanwhile', wokenMs);
      expect(watchedMs).toBeLessThan(200);
      expect(wokenMs).toBeLessThan(200);

      await gate.query('SELECT pg_advisory_unlock($1)', [gateLock]);
      await committing;
      // The slow key's waiter could not announce itself: it learns of the commit by polling.
      expect(await slowWatch.next(5_000)).toBe('changed');
    } finally {
      await gate.query('SELECT pg_advisory_unlock_all()');
      gate.release();
    }
  });

  it('announces at most maxAnnouncedWaiters waiters at once; the others still learn of their completion, by polling', async () => {
    const store = await newStore({ maxAnnouncedWaiters: 2 });
    const claims = [request('capped'), request('capped'), request('capped')];
    const owners = [];
    for (const claim of claims) owners.push(await store.claim(claim));
    const watches = [];
    for (const claim of claims) watches.push(await watched(store, claim));
    expect(await announcements()).toBe(2);
    const third = owners[2]!;
    if (third.kind !== 'claimed') throw new Error(`expected a claim, got ${third.kind}`);
    const woken = watches[2]!.next(5_000);
    const completedAtMs = performance.now();
    await store.complete(third.lease, completion);
    expect(await woken).toBe('changed');
    const wokenMs = performance.now() - completedAtMs;
    report('Postgres, a waiter past maxAnnouncedWaiters learns of its completion after', wokenMs);
    expect(wokenMs).toBeLessThan(500);
    // A withdrawn announcement frees its place for the next waiter.
    watches[0]!.close();
    await until(async () => ((await announcements()) === 1 ? true : undefined), 'the withdrawal');
    await watched(store, request('capped'));
    expect(await announcements()).toBe(2);
  });

  it('announces at most 64 waiters by default', async () => {
    const store = await newStore();
    for (let i = 0; i < 66; i++) {
      const claim = request('default-cap');
      await store.claim(claim);
      await watched(store, claim);
    }
    expect(await announcements()).toBe(64);
  });

  it('refuses a maxAnnouncedWaiters that is not a non-negative integer, at construction', () => {
    for (const maxAnnouncedWaiters of [-1, 1.5, Number.NaN]) {
      expect(() => new PostgresStore({ pool: appPool, schema, maxAnnouncedWaiters })).toThrow(IdempotencyConfigError);
    }
  });
});

describe('a waiting duplicate whose store cannot LISTEN (connection limit reached)', () => {
  const role = `i21_limited_${randomBytes(4).toString('hex')}`;
  let rolePool: pg.Pool;

  beforeAll(async () => {
    const password = randomBytes(12).toString('hex');
    // One connection for the role: the pool's. The store's listening connection is refused (53300).
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' CONNECTION LIMIT 1`);
    const owner = new PostgresStore({ pool: admin, schema, table: 'limited_records' });
    await owner.migrate();
    await owner.close();
    await admin.query(`GRANT USAGE ON SCHEMA "${schema}" TO ${role}`);
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON "${schema}".limited_records TO ${role}`);
    const url = new URL(DATABASE_URL);
    url.username = role;
    url.password = password;
    rolePool = new pg.Pool({ connectionString: url.toString(), max: 1 });
    rolePool.on('error', () => undefined);
  });
  afterAll(async () => {
    await rolePool?.end();
    await admin.query(`DROP OWNED BY ${role}`).catch(() => undefined);
    await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
  });

  it('falls back to polling and gets its replay, not a 503', async () => {
    const store = new PostgresStore({ pool: rolePool, schema, table: 'limited_records', replayCacheEntries: 0 });
    closers.push(() => store.close());
    const observed = observedStore(store);
    const ownerStarted = signal();
    const complete = signal();
    const server = await waiterApp({ store: observed.store, onInProgress: 'wait', waitMs: 6_000 }, async (_ctx, execution) => {
      if (execution === 1) {
        ownerStarted.fire();
        await complete.promise;
      }
    });
    closers.push(() => server.close());
    const key = `limited-${Date.now()}`;
    const owner = post(server.url, key);
    await ownerStarted.promise;
    const waiter = post(server.url, key);
    await Promise.race([observed.waiting(), waiter]);
    complete.fire();
    const [first, duplicate] = await Promise.all([owner, waiter]);
    report('Postgres, no LISTEN possible: replay after the completion', duplicate.answeredAtMs - first.answeredAtMs);
    expect(first.status).toBe(201);
    expect(duplicate).toMatchObject({ status: 201, body: first.body, replayed: true });
    expect(duplicate.answeredAtMs - first.answeredAtMs).toBeLessThan(500);
  });
});
