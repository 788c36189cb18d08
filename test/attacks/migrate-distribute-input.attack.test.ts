import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';

/**
 * migrate({ distribute }) on a database without Citus, with hostile or malformed options: validation must
 * refuse before any SQL runs (no table made, nothing injected), and a valid request must be refused clearly
 * because Citus is absent, never half-done silently.
 */

for (const target of databaseTargets()) {
  describe(`migrate({ distribute }) input validation on ${target.name}`, () => {
    let db: TestDatabase;
    let n = 0;
    beforeAll(async () => {
      db = await target.open('atk_dist');
      await db.sql.query(`CREATE TABLE "${db.schema}".victim (id int)`);
    });
    afterAll(() => db?.close());

    const storeOn = (partitioning = false) => new PostgresStore({ ...db.source, schema: db.schema, table: `dist_${++n}`, partitioning });
    const tableExists = async (store: PostgresStore) => {
      const { rows } = await db.sql.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [`"${db.schema}"."${store.table.table}"`]);
      return rows[0]!.t !== null;
    };
    const victimExists = async () => {
      const { rows } = await db.sql.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [`"${db.schema}".victim`]);
      return rows[0]!.t !== null;
    };

    const hostile: Array<[string, unknown]> = [
      ['an injection in colocateWith', { colocateWith: `victim'); DROP TABLE "${'x'}".victim; --` }],
      ['a quoted identifier in colocateWith', { colocateWith: '"Victim"' }],
      ['three parts in colocateWith', { colocateWith: 'a.b.c' }],
      ['an empty colocateWith', { colocateWith: '' }],
      ['a trailing dot in colocateWith', { colocateWith: 'public.' }],
      ['a non-string colocateWith', { colocateWith: 42 }],
      ['a column that is not scope or key', { column: 'fingerprint' }],
      ['an injected column', { column: "scope'); DROP TABLE victim; --" }],
      ['an upper-case column', { column: 'SCOPE' }],
    ];
    for (const [name, distribute] of hostile) {
      it(`${name}: refused with IdempotencyConfigError before any SQL (no table created, nothing dropped)`, async () => {
        for (const partitioning of [false, true]) {
          const store = storeOn(partitioning);
          const error = await store.migrate({ distribute: distribute as never }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(error).toBeInstanceOf(IdempotencyConfigError);
          expect(await tableExists(store)).toBe(false);
          expect(await victimExists()).toBe(true);
          await store.close();
        }
      });
    }

    it('distribute: true without Citus is refused with an IdempotencyConfigError naming the citus extension (plain and partitioned)', async () => {
      for (const partitioning of [false, true]) {
        const store = storeOn(partitioning);
        const error = await store.migrate({ distribute: true }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(IdempotencyConfigError);
        expect(String((error as Error).message)).toMatch(/citus/);
        // Running it again (a deploy retried) refuses the same way, nothing else broken.
        const again = await store.migrate({ distribute: { column: 'key' } }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(again).toBeInstanceOf(IdempotencyConfigError);
        // migrate() without the option still works on what was left.
        await store.migrate();
        expect(await tableExists(store)).toBe(true);
        await store.close();
      }
    });

    it('distribute: false and distribute: undefined migrate a local table as before', async () => {
      const store = storeOn();
      await store.migrate({ distribute: false });
      await store.migrate({});
      expect(await tableExists(store)).toBe(true);
      await store.close();
    });

    it.each([[null], ['yes'], [1]])(
      'a non-object, non-boolean distribute (%j) is refused with IdempotencyConfigError before any SQL, not taken as true',
      async (distribute) => {
        const store = storeOn();
        const error = await store.migrate({ distribute: distribute as never }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect({ error: error instanceof IdempotencyConfigError ? 'IdempotencyConfigError' : String(error), tableCreated: await tableExists(store) }).toEqual({
          error: 'IdempotencyConfigError',
          tableCreated: false,
        });
        await store.close();
      },
    );
  });
}
