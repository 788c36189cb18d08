import { describe, beforeAll, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { AT_ONCE_MS, circular, lifecycleHarness, MODES, newKey, post } from '../helpers/lifecycle-harness.js';

/** Regressions of issue 14, each describe block named after the behaviour: a failure after the handler ends the claim, and a known rollback is not an unknown outcome (test/helpers/lifecycle-harness.ts). */
describe.each(databaseTargets())('lifecycle hardening on $name', (target) => {
  const lifecycle = lifecycleHarness(target, 'lifecycle_failures');
  const { start, charges, expectProblem } = lifecycle;
  let db: TestDatabase;
  let store: PostgresStore;
  beforeAll(() => {
    ({ db, store } = lifecycle);
  });

  describe.each(MODES)('$mode mode', ({ mode, transactional }) => {
    describe('a failure after the handler ends the claim', () => {
      it.each([
        ['a BigInt', () => ({ amount: 10n })],
        ['a circular', circular],
      ])('answers a 500 problem when the response body holds %s value, and the same key runs again at once', async (_label, body) => {
        const { url, executions } = await start({
          transactional,
          respond: (ctx, n) => {
            if (n === 1) ctx.body = body();
          },
        });
        const key = newKey(`unserialisable-${mode}`);
        const first = await post(url, key);
        expectProblem(first, 500, 'requestFailed');
        expect(await store.find('', key)).toBeUndefined();

        const retry = await post(url, key, {}, AT_ONCE_MS);
        expect(retry.status).toBe(201);
        expect(executions()).toBe(2);
        if (transactional) expect(await charges(key)).toBe(1);
      });

      it('answers a 500 problem when the shouldStore hook throws, and the same key runs again at once', async () => {
        let hookCalls = 0;
        const { url, executions } = await start({
          transactional,
          options: {
            shouldStore: (status) => {
              if (++hookCalls === 1) throw new Error('shouldStore hook failed');
              return status < 500;
            },
          },
        });
        const key = newKey(`should-store-throws-${mode}`);
        expectProblem(await post(url, key), 500, 'requestFailed');
        expect(await store.find('', key)).toBeUndefined();

        const retry = await post(url, key, {}, AT_ONCE_MS);
        expect(retry.status).toBe(201);
        expect(executions()).toBe(2);
        if (transactional) expect(await charges(key)).toBe(1);
      });

      // Lease mode holds no connection while the handler runs; the pool is at stake in transactional mode.
      it.runIf(transactional)(
        `never drains the pool: after twice the pool size of unserialisable responses, a normal request succeeds at once${transactional ? '' : ' (skipped in lease mode: it holds no connection while the handler runs)'}`,
        async () => {
          const poolSize = db.newPool ? 3 : 1; // PGlite is one connection
          const appStore = db.newPool ? new PostgresStore({ pool: db.newPool(poolSize), schema: db.schema }) : store;
          const { url } = await start({
            transactional,
            store: appStore,
            respond: (ctx) => {
              if (ctx.get('x-break') === 'yes') ctx.body = { amount: 10n };
            },
          });
          for (let request = 0; request < 2 * poolSize; request++) {
            const failed = await post(url, newKey(`drain-${mode}`), { 'x-break': 'yes' });
            expect(failed.status).toBe(500);
          }
          const normal = await post(url, newKey(`after-drain-${mode}`), {}, AT_ONCE_MS);
          expect(normal.status).toBe(201);
          if (appStore !== store) await appStore.close();
        },
      );
    });
  });

  describe('a known rollback is not an unknown outcome (transactional mode)', () => {
    it('answers a 500 problem, not 503, when the handler caught a SQL error and left the transaction aborted; the same key runs again at once', async () => {
      const { url, executions } = await start({
        transactional: true,
        respond: async (ctx, n) => {
          // No savepoint: the failed statement aborts the claim's transaction.
          if (n === 1) await ctx.idempotency!.db!.query('SELECT 1 / 0').catch(() => undefined);
        },
      });
      const key = newKey('aborted-transaction');
      const first = await post(url, key);
      expectProblem(first, 500, 'requestFailed');
      expect(JSON.parse(first.text).detail).not.toMatch(/could not be confirmed/);
      expect(await store.find('', key)).toBeUndefined();
      expect(await charges(key)).toBe(0);

      const retry = await post(url, key, {}, AT_ONCE_MS);
      expect(retry.status).toBe(201);
      expect(executions()).toBe(2);
      expect(await charges(key)).toBe(1);
    });

    it('answers a 500 problem saying nothing was committed, not 503 "could not be confirmed", when a deferred constraint fails the COMMIT; the key runs again', async () => {
      // A deferred constraint is checked by COMMIT: the completion succeeds, then Postgres refuses the COMMIT
      // and rolls the transaction back: a known outcome.
      await db.sql.query(`CREATE TABLE "${db.schema}".deferred (id int, CONSTRAINT once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`);
      const { url, executions } = await start({
        transactional: true,
        respond: (ctx, n) => ctx.idempotency!.db!.query(`INSERT INTO "${db.schema}".deferred (id) VALUES (1)${n === 1 ? ', (1)' : ''}`).then(() => undefined),
      });
      const key = newKey('commit-refused');
      const first = await post(url, key);
      expectProblem(first, 500, 'requestFailed');
      expect(JSON.parse(first.text).detail).toMatch(/nothing was committed/);
      expect(JSON.parse(first.text).detail).not.toMatch(/could not be confirmed/);
      expect(await store.find('', key)).toBeUndefined();

      const retry = await post(url, key, {}, AT_ONCE_MS);
      expect(retry.status).toBe(201);
      expect(executions()).toBe(2);
    });
  });
});
