import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type TransactionalDb } from '../../src/index.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { txCapabilityHarness } from '../helpers/tx-capability-harness.js';

/** ctx.idempotency.db used outside its request: next() called twice, writes never awaited, queries after the handler returned, a kept handle (test/helpers/tx-capability-harness.ts). */
for (const target of databaseTargets({ pipelined: true })) {
  describe(`transactional capability attacks on ${target.name}`, () => {
    const harness = txCapabilityHarness(target, 'atk_txcap_scope');
    const { chargesOf, oneConnectionStore, app, insertCharge } = harness;
    let db: TestDatabase;
    let charges: string;
    beforeAll(() => {
      ({ db, charges } = harness);
    });
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    it('a middleware that calls next() twice after the idempotency middleware: one write at most, never a write without its response', async () => {
      const store = await db.store({ replayCacheEntries: 0 });
      let executions = 0;
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store, transactional: true }));
      koa.use(async (_ctx, next) => {
        await next();
        await next();
      });
      koa.use(async (ctx) => {
        executions++;
        await insertCharge(ctx.idempotency!.db!, ctx.idempotency!.key);
        ctx.status = 201;
        ctx.body = { n: executions };
      });
      const server = await serve(koa);
      const key = newKey('next-twice');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const retry = await postJson(`${server.url}/c`, {}, { key });
        const charged = await chargesOf(key);
        // Either the first answer was stored (then the retry replays it) or nothing was committed.
        if (first.status === 201) expect([charged, retry.headers.get('idempotent-replayed')]).toEqual([1, 'true']);
        else expect(charged).toBe(0);
        expect(first.status).toBe(500);
      } finally {
        await server.close();
      }
    });

    it('fire-and-forget writes (never awaited) either commit with the response or not at all', async () => {
      const store = await db.store({ replayCacheEntries: 0 });
      const { server, executions } = await app(store, async (tx, key) => {
        void insertCharge(tx, key).catch(() => undefined);
        void insertCharge(tx, key).catch(() => undefined);
      });
      const key = newKey('fire-forget');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const retry = await postJson(`${server.url}/c`, {}, { key });
        expect(first.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBe('true');
        expect([executions(), await chargesOf(key)]).toEqual([1, 2]);
      } finally {
        await server.close();
      }
    });

    it('a late query chained after the handler returned is rejected, never runs in a later transaction', async () => {
      const store = await oneConnectionStore();
      const late: Array<Promise<unknown>> = [];
      const { server } = await app(store, async (tx, key, execution) => {
        await insertCharge(tx, key);
        if (execution === 1) {
          late.push(
            tx
              .query('SELECT pg_sleep(0.05)')
              .then(() => tx.query(`INSERT INTO ${charges} (key, amount) VALUES ('late', 1)`))
              .then(
                () => 'ran',
                (error: unknown) => (error instanceof TransactionControlError ? 'revoked' : `failed: ${String(error)}`),
              ),
          );
        }
      });
      try {
        expect((await postJson(`${server.url}/c`, {}, { key: newKey('late-a') })).status).toBe(201);
        expect((await postJson(`${server.url}/c`, {}, { key: newKey('late-b') })).status).toBe(201);
        expect(await Promise.all(late)).toEqual(['revoked']);
        expect(await chargesOf('late')).toBe(0);
      } finally {
        await server.close();
        await store.close();
      }
    });

    it('a kept db handle is rejected during another request on the same connection', async () => {
      const store = await oneConnectionStore();
      let kept: TransactionalDb | undefined;
      let lateResult: string | undefined;
      const { server } = await app(store, async (tx, key, execution) => {
        if (execution === 1) kept = tx;
        if (execution === 2) {
          lateResult = await kept!.query(`INSERT INTO ${charges} (key, amount) VALUES ('kept', 1)`).then(
            () => 'ran',
            (error: unknown) => (error instanceof TransactionControlError ? 'revoked' : String(error)),
          );
        }
        await insertCharge(tx, key);
      });
      try {
        expect((await postJson(`${server.url}/c`, {}, { key: newKey('kept-a') })).status).toBe(201);
        expect((await postJson(`${server.url}/c`, {}, { key: newKey('kept-b') })).status).toBe(201);
        expect(lateResult).toBe('revoked');
        expect(await chargesOf('kept')).toBe(0);
      } finally {
        await server.close();
        await store.close();
      }
    });
  });
}
