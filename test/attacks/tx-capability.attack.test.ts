import Koa from 'koa';
import { Readable } from 'node:stream';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type IdempotencyOptions, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/** A Postgres-server-only case's name, saying on PGlite why it is skipped there. */
const onServerOnly = (targetName: string, name: string) =>
  targetName.startsWith('Postgres server') ? name : `${name} (skipped on PGlite: one in-process session, no pooled connection to share or lose)`;

/**
 * Black-box attacks on transactional mode's `ctx.idempotency.db` capability: one key must never run its
 * business write twice, never commit a write without its stored response, never leak the connection or
 * the session state of the connection to the next request of the pool.
 */

type Handle = (db: TransactionalDb, key: string, execution: number, ctx: Koa.Context) => Promise<void>;

for (const target of databaseTargets({ pipelined: true })) {
  describe(`transactional capability attacks on ${target.name}`, () => {
    let db: TestDatabase;
    let charges: string;
    let counter = 0;

    beforeAll(async () => {
      db = await target.open('atk_txcap');
      charges = `"${db.schema}".charges`;
      await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
    });
    afterAll(() => db?.close());

    const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    /** A store on a one-connection pool (Postgres) so session state left behind by a handler is seen by the next request. */
    async function oneConnectionStore(): Promise<PostgresStore> {
      if (db.kind === 'pglite') return db.store({ replayCacheEntries: 0 });
      const store = new PostgresStore({ pool: db.newPool!(1), schema: db.schema, replayCacheEntries: 0 });
      await store.migrate();
      return store;
    }

    async function app(store: PostgresStore, handle: Handle, options: Partial<IdempotencyOptions> = {}) {
      let executions = 0;
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store, transactional: true, ...options }));
      koa.use(async (ctx) => {
        executions++;
        await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions, ctx);
        if (ctx.body === undefined) {
          ctx.status = 201;
          ctx.body = { charged: true };
        }
      });
      return { server: await serve(koa), executions: () => executions };
    }

    const insertCharge = (tx: TransactionalDb, key: string) => tx.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, [key]);

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

    it.each([
      ['an early COMMIT then BEGIN', (key: string) => `INSERT INTO ${charges} (key, amount) VALUES ('${key}', 1); COMMIT; BEGIN`],
      [
        'an early COMMIT that re-arms the claim mark',
        (key: string) =>
          `INSERT INTO ${charges} (key, amount) VALUES ('${key}', 1); COMMIT; BEGIN; SELECT set_config('koa_idempotency.claim_mark', current_setting('koa_idempotency.claim_mark', true), true)`,
      ],
      ['a ROLLBACK that undoes the claim, then a write outside it', (key: string) => `ROLLBACK; INSERT INTO ${charges} (key, amount) VALUES ('${key}', 1)`],
    ])('refuses a multi-statement text (%s): one statement per query, nothing committed, the retry charges once', async (_label, text) => {
      const store = await db.store({ replayCacheEntries: 0 });
      const { server, executions } = await app(store, async (tx, key, execution) => {
        if (execution === 1) await tx.query(text(key));
        await insertCharge(tx, key);
      });
      const key = newKey('multi-statement');
      try {
        const first = await postJson(`${server.url}/c`, { amount: 1 }, { key });
        expect([first.status, await chargesOf(key)]).toEqual([500, 0]);
        const retry = await postJson(`${server.url}/c`, { amount: 1 }, { key });
        expect([retry.status, executions(), await chargesOf(key)]).toEqual([201, 2, 1]);
      } finally {
        await server.close();
      }
    });

    it.each([
      ['BEGIN'],
      ['  /* c */ -- x\n commit'],
      ['/* /* nested */ */ ROLLBACK'],
      ['\n;;  END'],
      ['ABORT'],
      ['START TRANSACTION'],
      ["PREPARE TRANSACTION 'x'"],
      ['COMMIT AND CHAIN'],
      ['ROLLBACK AND CHAIN'],
    ])('refuses the control statement %j before it reaches Postgres; nothing committed; the retry charges once', async (statement) => {
      const store = await db.store({ replayCacheEntries: 0 });
      const errors: unknown[] = [];
      const { server, executions } = await app(store, async (tx, key, execution) => {
        await insertCharge(tx, key);
        if (execution === 1) {
          try {
            await tx.query(statement);
          } catch (error) {
            errors.push(error);
            throw error;
          }
        }
      });
      const key = newKey('control');
      try {
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(500);
        expect(errors[0]).toBeInstanceOf(TransactionControlError);
        expect(await chargesOf(key)).toBe(0);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect([executions(), await chargesOf(key)]).toEqual([2, 1]);
      } finally {
        await server.close();
      }
    });

    it.each([
      ['DO block that commits', `DO $$ BEGIN INSERT INTO %CHARGES% VALUES ('%KEY%', 1); COMMIT; END $$`],
      ['CALL of a procedure that commits', `CALL %SCHEMA%.commit_it('%KEY%')`],
      ['ROLLBACK TO a savepoint made before the claim', `ROLLBACK TO SAVEPOINT nonexistent`],
      ['SET TRANSACTION READ ONLY', `SET TRANSACTION READ ONLY`],
      ['DISCARD ALL', 'DISCARD ALL'],
    ])('%s: never commits a write without its response; the retry charges exactly once', async (_name, template) => {
      await db.sql.query(
        `CREATE OR REPLACE PROCEDURE "${db.schema}".commit_it(k text) LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ${charges} VALUES (k, 1); COMMIT; END $$`,
      );
      const store = await db.store({ replayCacheEntries: 0 });
      const { server } = await app(store, async (tx, key, execution) => {
        await insertCharge(tx, key);
        if (execution === 1) {
          await tx.query(template.replaceAll('%CHARGES%', charges).replaceAll('%KEY%', key).replaceAll('%SCHEMA%', `"${db.schema}"`));
        }
      });
      const key = newKey('escape');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const afterFirst = await chargesOf(key);
        const retry = await postJson(`${server.url}/c`, {}, { key });
        const again = await postJson(`${server.url}/c`, {}, { key });
        // Either the first run committed everything (then replays), or nothing (then the retry runs once).
        if (first.status === 201) expect([afterFirst, retry.headers.get('idempotent-replayed')]).toEqual([1, 'true']);
        else expect(afterFirst).toBe(0);
        expect(await chargesOf(key)).toBe(1);
        expect(again.status).toBe(201);
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
