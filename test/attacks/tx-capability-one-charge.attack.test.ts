import { Readable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { onServerOnly, txCapabilityHarness } from '../helpers/tx-capability-harness.js';

/** One charge per key whatever happens to the request: concurrent duplicates, its backend terminated, a handler that throws, a streamed body that fails midway (test/helpers/tx-capability-harness.ts). */
for (const target of databaseTargets({ pipelined: true })) {
  describe(`transactional capability attacks on ${target.name}`, () => {
    const harness = txCapabilityHarness(target, 'atk_txcap_charge');
    const { chargesOf, oneConnectionStore, app, insertCharge } = harness;
    let db: TestDatabase;
    beforeAll(() => {
      ({ db } = harness);
    });
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    it('eight concurrent duplicates of one key (onInProgress wait): one execution, one charge, every answer the same', async () => {
      const store = await db.store({ replayCacheEntries: 0 });
      const { server, executions } = await app(
        store,
        async (tx, key) => {
          await insertCharge(tx, key);
        },
        { onInProgress: 'wait' },
      );
      const key = newKey('concurrent');
      try {
        const answers = await Promise.all(Array.from({ length: 8 }, () => postJson(`${server.url}/c`, { amount: 1 }, { key })));
        expect([...new Set(answers.map((a) => `${a.status} ${a.text}`))]).toEqual([`201 ${JSON.stringify({ charged: true })}`]);
        expect([executions(), await chargesOf(key)]).toEqual([1, 1]);
      } finally {
        await server.close();
      }
    });

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'pg_terminate_backend(pg_backend_pid()) in the handler: nothing committed, no connection leaked, the retry charges once'),
      async () => {
        const store = await oneConnectionStore();
        const { server, executions } = await app(store, async (tx, key, execution) => {
          await insertCharge(tx, key);
          if (execution === 1) await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
        });
        const key = newKey('terminate');
        try {
          expect((await postJson(`${server.url}/c`, {}, { key })).status).toBeGreaterThanOrEqual(500);
          expect(await chargesOf(key)).toBe(0);
          expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
          expect((await postJson(`${server.url}/c`, {}, { key })).headers.get('idempotent-replayed')).toBe('true');
          expect([executions(), await chargesOf(key)]).toEqual([2, 1]);
        } finally {
          await server.close();
          await store.close();
        }
      },
    );

    it('a handler that throws after its writes, many times on a one-connection pool: nothing committed, no connection leaked', async () => {
      const store = await oneConnectionStore();
      const { server } = await app(store, async (tx, key, execution) => {
        await insertCharge(tx, key);
        if (execution <= 5) throw new Error('after the write');
      });
      const key = newKey('throws');
      try {
        for (let i = 0; i < 5; i++) expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(500);
        expect(await chargesOf(key)).toBe(0);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect(await chargesOf(key)).toBe(1);
      } finally {
        await server.close();
        await store.close();
      }
    });

    it('a streamed response body that fails midway: the write is committed once, kept as executed (409 not replayable), never run again', async () => {
      const store = await db.store({ replayCacheEntries: 0 });
      const { server, executions } = await app(store, async (tx, key, execution, ctx) => {
        await insertCharge(tx, key);
        ctx.status = 201;
        ctx.type = 'text/plain';
        ctx.body = new Readable({
          read() {
            this.push('partial');
            this.destroy(new Error('stream broke'));
          },
        });
      });
      const key = newKey('stream');
      try {
        await postJson(`${server.url}/c`, {}, { key }).catch(() => undefined);
        const second = await postJson(`${server.url}/c`, {}, { key });
        expect([second.status, JSON.parse(second.text).type]).toEqual([409, 'urn:koa-idempotency:problem:response-not-replayable']);
        expect([executions(), await chargesOf(key)]).toEqual([1, 1]);
      } finally {
        await server.close();
      }
    });
  });
}
