import { beforeAll, describe, expect, it } from 'vitest';
import { TransactionControlError } from '../../src/index.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { txCapabilityHarness } from '../helpers/tx-capability-harness.js';

/** Transaction control through ctx.idempotency.db (COMMIT, BEGIN, ROLLBACK, a DO block or procedure that commits) is refused: no write commits without its response (test/helpers/tx-capability-harness.ts). */
for (const target of databaseTargets({ pipelined: true })) {
  describe(`transactional capability attacks on ${target.name}`, () => {
    const harness = txCapabilityHarness(target, 'atk_txcap_control');
    const { chargesOf, app, insertCharge } = harness;
    let db: TestDatabase;
    let charges: string;
    beforeAll(() => {
      ({ db, charges } = harness);
    });
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

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
  });
}
