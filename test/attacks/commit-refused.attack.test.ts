import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions, type TransactionalDb } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/** A Postgres-server-only case's name, saying on PGlite why it is skipped there. */
const onServerOnly = (targetName: string, name: string) =>
  targetName.startsWith('Postgres server') ? name : `${name} (skipped on PGlite: one in-process session, no pooled connection to share or lose)`;

/**
 * A COMMIT that Postgres refuses is answered "nothing was committed" and the key runs again: that must be TRUE
 * in every such case. Plus multi-statement texts that end the claim's transaction, and lock_timeout bounds.
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

for (const target of databaseTargets({ pipelined: true })) {
  describe(`commit refusal and transaction escapes on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let s: string;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_commit');
      s = `"${db.schema}"`;
      await db.sql.query(`CREATE TABLE ${s}.charges (key text NOT NULL, amount int NOT NULL)`);
      await db.sql.query(`CREATE TABLE ${s}.accounts (id int PRIMARY KEY)`);
      await db.sql.query(
        `CREATE TABLE ${s}.ledger (key text, account int, CONSTRAINT fk FOREIGN KEY (account) REFERENCES ${s}.accounts (id) DEFERRABLE INITIALLY DEFERRED)`,
      );
      await db.sql.query(`CREATE TABLE ${s}.checked (key text, amount int)`);
      await db.sql.query(
        `CREATE FUNCTION ${s}.refuse_negative() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.amount < 0 THEN RAISE EXCEPTION 'negative amount'; END IF; RETURN NULL; END $$`,
      );
      await db.sql.query(
        `CREATE CONSTRAINT TRIGGER no_negative AFTER INSERT ON ${s}.checked DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${s}.refuse_negative()`,
      );
      store = await db.store({ replayCacheEntries: 0 });
    });
    afterAll(() => db?.close());

    const count = (table: string, key: string) => rowsWithKey(db.sql, `${s}.${table}`, key);

    async function app(handle: Handle, options: Partial<IdempotencyOptions> = {}, onStore: PostgresStore = store) {
      let executions = 0;
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store: onStore, transactional: true, ...options }));
      koa.use(async (ctx) => {
        executions++;
        await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      return { server: await serve(koa), executions: () => executions };
    }

    it('a deferred foreign key refused at COMMIT: 500 "nothing was committed", no record, no row, the key runs again once', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        await tx.query(`INSERT INTO ${s}.ledger VALUES ($1, $2)`, [key, execution === 1 ? 999 : 1]);
        if (execution > 1) await tx.query(`INSERT INTO ${s}.accounts VALUES (1) ON CONFLICT DO NOTHING`);
      });
      const key = newKey('deferred-fk');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        expect([first.status, JSON.parse(first.text).detail]).toEqual([500, expect.stringMatching(/nothing was committed/)]);
        expect([await count('charges', key), await count('ledger', key), await store.find('', key)]).toEqual([0, 0, undefined]);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect((await postJson(`${server.url}/c`, {}, { key })).headers.get('idempotent-replayed')).toBe('true');
        expect([executions(), await count('charges', key)]).toEqual([2, 1]);
      } finally {
        await server.close();
      }
    });

    it('a deferred constraint trigger that raises at COMMIT (SQLSTATE P0001): Postgres rolled back, so it is answered "nothing was committed" and the key runs again once', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        await tx.query(`INSERT INTO ${s}.checked VALUES ($1, $2)`, [key, execution === 1 ? -5 : 5]);
      });
      const key = newKey('deferred-trigger');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const charged = await count('charges', key);
        const record = await store.find('', key);
        const retry = await postJson(`${server.url}/c`, {}, { key });
        expect({
          first: [first.status, JSON.parse(first.text).detail],
          charged,
          record,
          retry: retry.status,
          executions: executions(),
          total: await count('charges', key),
        }).toEqual({
          first: [500, expect.stringMatching(/nothing was committed/)],
          charged: 0,
          record: undefined,
          retry: 201,
          executions: 2,
          total: 1,
        });
      } finally {
        await server.close();
      }
    });

    it('a handler that SETs CONSTRAINTS ALL IMMEDIATE and hits the violation: nothing committed, key runs again', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        await tx.query(`INSERT INTO ${s}.ledger VALUES ($1, $2)`, [key, execution === 1 ? 998 : 1]);
        if (execution > 1) await tx.query(`INSERT INTO ${s}.accounts VALUES (1) ON CONFLICT DO NOTHING`);
        await tx.query('SET CONSTRAINTS ALL IMMEDIATE');
      });
      const key = newKey('immediate');
      try {
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(500);
        expect(await count('charges', key)).toBe(0);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect([executions(), await count('charges', key)]).toEqual([2, 1]);
      } finally {
        await server.close();
      }
    });

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(
        target.name,
        'a multi-statement text "…; ROLLBACK; INSERT …" (would undo the claim, then write outside it) is refused by Postgres: nothing written, the retry charges once',
      ),
      async () => {
        const { server, executions } = await app(async (tx, key, execution) => {
          if (execution === 1) {
            await tx.query(`SELECT 1; ROLLBACK; INSERT INTO ${s}.charges VALUES ('${key}', 1)`);
            return;
          }
          await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        });
        const key = newKey('rollback-then-write');
        try {
          const first = await postJson(`${server.url}/c`, {}, { key });
          const retry = await postJson(`${server.url}/c`, {}, { key });
          expect({ first: first.status, retry: retry.status, executions: executions(), charges: await count('charges', key) }).toEqual({
            first: 500,
            retry: 201,
            executions: 2,
            charges: 1,
          });
        } finally {
          await server.close();
        }
      },
    );

    it.each([
      ['RESET ALL', 'RESET ALL'],
      ['clearing the claim mark', `SELECT set_config('koa_idempotency.claim_mark', '', true)`],
      ['SET SESSION AUTHORIZATION DEFAULT', 'SET SESSION AUTHORIZATION DEFAULT'],
    ])('%s in the handler: never a write without its response, never a write twice', async (_name, statement) => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        if (execution === 1) await tx.query(statement);
      });
      const key = newKey('reset');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const afterFirst = await count('charges', key);
        const retry = await postJson(`${server.url}/c`, {}, { key });
        if (first.status === 201) expect([afterFirst, retry.headers.get('idempotent-replayed')]).toEqual([1, 'true']);
        else expect(afterFirst).toBe(0);
        expect(await count('charges', key)).toBe(1);
        expect(executions()).toBeLessThanOrEqual(2);
      } finally {
        await server.close();
      }
    });

    it('a query config object {text: "COMMIT"} is refused, nothing committed', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
        if (execution === 1) await (tx.query as unknown as (config: unknown) => Promise<unknown>)({ text: 'COMMIT' });
      });
      const key = newKey('config-object');
      try {
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(500);
        expect(await count('charges', key)).toBe(0);
        expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        expect([executions(), await count('charges', key)]).toEqual([2, 1]);
      } finally {
        await server.close();
      }
    });

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'lockTimeoutMs bounds a handler blocked on a row lock: 500 within the bound, nothing committed, the retry runs once'),
      async () => {
        await db.sql.query(`INSERT INTO ${s}.accounts VALUES (77) ON CONFLICT DO NOTHING`);
        const blocker = db.newPool!(1);
        const client = await blocker.connect();
        await client.query('BEGIN');
        await client.query(`SELECT * FROM ${s}.accounts WHERE id = 77 FOR UPDATE`);
        const { server, executions } = await app(
          async (tx, key) => {
            await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
            await tx.query(`UPDATE ${s}.accounts SET id = 77 WHERE id = 77`);
          },
          {},
          await db.store({ replayCacheEntries: 0, lockTimeoutMs: 200 }),
        );
        const key = newKey('lock-timeout');
        try {
          const started = Date.now();
          const first = await postJson(`${server.url}/c`, {}, { key });
          const elapsed = Date.now() - started;
          expect([first.status, elapsed < 2000]).toEqual([500, true]);
          expect(await count('charges', key)).toBe(0);
          await client.query('ROLLBACK');
          expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
          expect([executions(), await count('charges', key)]).toEqual([2, 1]);
        } finally {
          client.release();
          await server.close();
        }
      },
    );

    it.runIf(target.name.startsWith('Postgres server'))(
      onServerOnly(target.name, 'a handler hanging past its lease (no early commit): a duplicate after the lease ran out must not run a second time'),
      async () => {
        let open!: () => void;
        const gate = new Promise<void>((resolve) => (open = resolve));
        let started!: () => void;
        const inHandler = new Promise<void>((resolve) => (started = resolve));
        const { server, executions } = await app(
          async (tx, key, execution) => {
            await tx.query(`INSERT INTO ${s}.charges VALUES ($1, 1)`, [key]);
            if (execution === 1) {
              started();
              await gate;
            }
          },
          { leaseMs: 300, onInProgress: 'reject' },
        );
        const key = newKey('hang');
        try {
          const first = postJson(`${server.url}/c`, {}, { key });
          await inHandler;
          const answers: number[] = [];
          // Keep retrying well past the 300 ms lease (bounded): each duplicate must be refused, never run.
          const until = Date.now() + 1200;
          for (let attempt = 0; attempt < 60 && Date.now() < until && executions() === 1; attempt++) {
            answers.push((await postJson(`${server.url}/c`, {}, { key })).status);
            await db.sql.query('SELECT pg_sleep(0.02)');
          }
          open();
          const firstAnswer = await first;
          expect({ executions: executions(), first: firstAnswer.status, duplicates: [...new Set(answers)], charges: await count('charges', key) }).toEqual({
            executions: 1,
            first: 201,
            duplicates: [409],
            charges: 1,
          });
        } finally {
          open();
          await server.close();
        }
      },
    );
  });
}
