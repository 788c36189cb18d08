import { beforeAll, describe, expect, it } from 'vitest';
import { TransactionControlError } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { onServerOnly, txCapabilityHarness } from '../helpers/tx-capability-harness.js';

/** Session state a handler sets through ctx.idempotency.db (SET, DEALLOCATE, advisory locks, LISTEN) never reaches the next request on the pooled connection (test/helpers/tx-capability-harness.ts). */
for (const target of databaseTargets({ pipelined: true })) {
  describe(`transactional capability attacks on ${target.name}`, () => {
    const harness = txCapabilityHarness(target, 'atk_txcap_session');
    const { oneConnectionStore, app, insertCharge } = harness;
    let db: TestDatabase;
    beforeAll(() => {
      ({ db } = harness);
    });
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    it('a session-level SET default_transaction_read_only by one handler is refused and does not break the next key (session state must not leak to the pool)', async () => {
      const store = await oneConnectionStore();
      const { server } = await app(store, async (tx, key, execution) => {
        await insertCharge(tx, key);
        if (execution === 1) await tx.query('SET SESSION default_transaction_read_only = on');
      });
      try {
        const first = await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('ro-a') });
        const second = await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('ro-b') });
        expect([first.status, second.status, second.text]).toEqual([500, 201, JSON.stringify({ charged: true })]);
      } finally {
        await server.close();
        // Heal the session for the other tests of this file (PGlite is one session).
        if (db.kind === 'pglite') await db.sql.query('SET SESSION default_transaction_read_only = off');
        await store.close();
      }
    });

    it('a session-level SET statement_timeout by one handler is refused and does not make the next key time out', async () => {
      const store = await oneConnectionStore();
      const { server } = await app(store, async (tx, key, execution) => {
        if (execution === 1) await tx.query(`SET statement_timeout = 1`);
        if (execution === 2) await tx.query('SELECT pg_sleep(0.05)');
        await insertCharge(tx, key);
      });
      try {
        const first = await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('st-a') });
        const second = await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('st-b') });
        expect([first.status, second.status]).toEqual([500, 201]);
      } finally {
        await server.close();
        if (db.kind === 'pglite') await db.sql.query('SET SESSION statement_timeout = 0');
        await store.close();
      }
    });

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'DEALLOCATE ALL by a handler that then fails: the rolled-back request must not break the pooled connection for later keys'),
      async () => {
        const store = await oneConnectionStore();
        const { server } = await app(store, async (tx, key, execution) => {
          await insertCharge(tx, key);
          if (execution === 1) {
            await tx.query('DEALLOCATE ALL');
            throw new Error('the handler failed');
          }
        });
        try {
          const first = await postJson(`${server.url}/c`, {}, { key: newKey('dealloc-a') });
          const later = [];
          for (let i = 0; i < 3; i++) later.push((await postJson(`${server.url}/c`, {}, { key: newKey('dealloc-b') })).status);
          expect({ first: first.status, later }).toEqual({ first: 500, later: [201, 201, 201] });
        } finally {
          await server.close();
          await store.close();
        }
      },
    );

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'a session-level advisory lock taken by a handler does not outlive its request on the pooled connection'),
      async () => {
        const store = await oneConnectionStore();
        const lockId = 424242 + counter;
        const { server } = await app(store, async (tx, key) => {
          await tx.query(`SELECT pg_advisory_lock(${lockId})`);
          await insertCharge(tx, key);
        });
        try {
          expect((await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('adv') })).status).toBe(201);
          const { rows } = await db.sql.query<{ held: number }>(
            `SELECT count(*)::int AS held FROM pg_locks WHERE locktype = 'advisory' AND objid = ${lockId} AND granted`,
          );
          expect(rows[0]!.held).toBe(0);
        } finally {
          await server.close();
          await store.close();
        }
      },
    );

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'LISTEN by a handler (refused as a statement, or run in a DO block) does not leave the pooled connection listening'),
      async () => {
        const pool = db.newPool!(1);
        const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0 });
        await store.migrate();
        const { server } = await app(store, async (tx, key) => {
          await expect(tx.query('LISTEN attacker_channel')).rejects.toThrow(TransactionControlError);
          await tx.query(`DO $$ BEGIN EXECUTE 'LISTEN attacker_channel'; END $$`);
          await insertCharge(tx, key);
        });
        try {
          expect((await postJson(`${server.url}/c`, { amount: 1 }, { key: newKey('listen') })).status).toBe(201);
          const { rows } = await pool.query<{ channel: string }>('SELECT pg_listening_channels() AS channel');
          expect(rows.map((row) => row.channel)).toEqual([]);
        } finally {
          await server.close();
          await store.close();
        }
      },
    );
  });
}
