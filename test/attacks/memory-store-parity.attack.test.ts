import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FencedError, idempotency, MemoryStore, type IdempotencyContext, type IdempotencyRecord, type IdempotencyStore } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { signal, until } from '../helpers/events.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on MemoryStore's fidelity: the same sequence of calls, through the public API, must give
 * the same answers on MemoryStore (what users' unit tests run on) as on PostgresStore (what production runs
 * on). A divergence means a user's unit test passes on behaviour production does not have, or the reverse.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = POSTGRES_SERVER;

describe('MemoryStore answers as PostgresStore does', () => {
  let db: TestDatabase;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open('atk_mem_parity');
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(() => db?.close());

  /** Both stores also read a record back (not part of the contract). */
  type ReadableStore = IdempotencyStore & { find(scope: string, key: string): Promise<IdempotencyRecord | undefined> };
  const stores: Array<[string, () => Promise<ReadableStore>]> = [
    ['MemoryStore', async () => new MemoryStore()],
    ['PostgresStore', () => db.store()],
  ];

  const request = (key: string) => ({ scope: 'parity', key, fingerprint: 'f1', fingerprintVersion: 1, leaseMs: 5_000, ttlSeconds: 60 });
  const response = { status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":true}') };

  it.each(stores)('%s: release() of a lease whose record is completed keeps the completed record (the retry is replayed, not run again)', async (_name, open) => {
    const store = await open();
    const key = newKey('release-after-complete');
    const claim = await store.claim(request(key));
    if (claim.kind !== 'claimed') throw new Error(`claimed expected, got ${claim.kind}`);
    await store.complete(claim.lease, { replayable: true, response });
    await store.release(claim.lease);
    const retry = await store.claim(request(key));
    expect([retry.kind, retry.kind === 'existing' && retry.record.status]).toEqual(['existing', 'completed']);
  });

  it.each(stores)('%s: saveStep() under a lease whose record is completed throws FencedError and leaves the record as completed', async (_name, open) => {
    const store = await open();
    const key = newKey('step-after-complete');
    const claim = await store.claim(request(key));
    if (claim.kind !== 'claimed') throw new Error(`claimed expected, got ${claim.kind}`);
    await store.complete(claim.lease, { replayable: true, response });
    await expect(store.saveStep(claim.lease, 'late', { charged: true })).rejects.toBeInstanceOf(FencedError);
    const retry = await store.claim(request(key));
    expect(retry.kind === 'existing' && retry.record.steps).toEqual({});
  });

  /**
   * A handler slower than `ttlSeconds`, its lease renewed meanwhile: the record must not expire under it, or a
   * duplicate claims the key afresh and runs the operation a second time while the first still runs.
   * PostgresStore's renewal pushes the record's expiry past the lease (renew-lease.ts).
   */
  it.each(stores)(
    '%s: a duplicate of a handler that outlives ttlSeconds (lease renewed) is answered 409, never run a second time',
    async (_name, open) => {
      const store = await open();
      let executions = 0;
      const entered = signal();
      const finish = signal();
      const app = new Koa();
      app.silent = true;
      app.use(bodyParser());
      app.use(idempotency({ store, scope: () => 'parity-http', ttlSeconds: 1, leaseMs: 300 }));
      app.use(async (ctx) => {
        // Only the first execution is held: a second one (the bug) answers at once.
        if (++executions === 1) {
          entered.fire();
          await finish.promise;
        }
        ctx.status = 201;
        ctx.body = { execution: executions };
      });
      const http = await serve(app);
      closing.push(() => http.close());
      const key = newKey('outlives-ttl');
      const first = postJson(http.url, { amount: 1 }, { key });
      await entered.promise;
      const claimed = await store.find('parity-http', key);
      const firstExpiryMs = claimed!.expiresAt.getTime();
      // The event: the expiry the record had at its claim (ttlSeconds later) has passed; the lease was renewed since.
      await until(() => (Date.now() > firstExpiryMs + 300 ? true : undefined), 'the expiry the record had at its claim to pass');
      const duplicate = await postJson(http.url, { amount: 1 }, { key });
      finish.fire();
      const firstAnswer = await first;
      expect([duplicate.status, executions, firstAnswer.status]).toEqual([409, 1, 201]);
    },
    15_000,
  );

  /** A handler that keeps `ctx.idempotency` and records a step after its response went out. */
  it.each(stores)('%s: a step() recorded after the response was sent is refused with FencedError', async (_name, open) => {
    const store = await open();
    const late = signal<unknown>();
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, scope: () => 'parity-late-step' }));
    app.use(async (ctx) => {
      const kept: IdempotencyContext = ctx.idempotency!;
      ctx.res.once(
        'finish',
        () =>
          void kept
            .step('after-response', () => 'late')
            .then(
              (value) => late.fire(value),
              (error: unknown) => late.fire(error),
            ),
      );
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const http = await serve(app);
    closing.push(() => http.close());
    expect((await postJson(http.url, { amount: 1 }, { key: newKey('late-step') })).status).toBe(201);
    expect(await late.promise).toBeInstanceOf(FencedError);
  });
});
