import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The claim's ON CONFLICT now reads "now" from the proposed row's created_at (EXCLUDED.created_at) instead of
 * now(), new-key inserts count RETURNING rows, and the partitioned claim draws its fence into a variable.
 * One execution per key must hold under concurrency for: a new key, an expired record re-claimed, and a
 * lapsed lease taken over, on the plain and the partitioned layout, in lease and transactional mode.
 */

const BURST = 16;

for (const target of databaseTargets()) {
  for (const partitioning of [false, true]) {
    for (const transactional of [false, true]) {
      const label = `${target.name}, ${partitioning ? 'partitioned' : 'plain'} table, ${transactional ? 'transactional' : 'lease'} mode`;
      describe(`concurrent claims of one key (${label})`, () => {
        let db: TestDatabase;
        let store: PostgresStore;
        let records: string;
        let charges: string;
        let counter = 0;
        const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

        beforeAll(async () => {
          db = await target.open(`atk_cc_${partitioning ? 'p' : 'n'}${transactional ? 't' : 'l'}`);
          store = await db.store({ replayCacheEntries: 0, partitioning });
          records = `"${db.schema}".idempotency_records`;
          charges = `"${db.schema}".charges`;
          await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, n int NOT NULL)`);
        });
        afterAll(() => db?.close());

        async function app(gate?: Promise<void>) {
          let executions = 0;
          let entered!: () => void;
          const inHandler = new Promise<void>((resolve) => (entered = resolve));
          const koa = new Koa();
          koa.silent = true;
          koa.use(bodyParser());
          koa.use(idempotency({ store, transactional, onInProgress: 'wait', waitMs: 20_000, leaseMs: 60_000 }));
          koa.use(async (ctx) => {
            const n = ++executions;
            const q = transactional ? ctx.idempotency!.db! : db.sql;
            await q.query(`INSERT INTO ${charges} VALUES ($1, $2)`, [ctx.idempotency!.key, n]);
            if (n === 1 && gate) {
              entered();
              await gate;
            }
            ctx.status = 201;
            ctx.body = { execution: n };
          });
          return { server: await serve(koa), executions: () => executions, inHandler };
        }

        it(`${BURST} concurrent first requests of a new key: one execution, every answer the same`, async () => {
          const { server, executions } = await app();
          const key = newKey('new');
          try {
            const answers = await Promise.all(Array.from({ length: BURST }, () => postJson(`${server.url}/c`, { a: 1 }, { key })));
            expect({ statuses: [...new Set(answers.map((a) => a.status))], bodies: [...new Set(answers.map((a) => a.text))], executions: executions() }).toEqual({
              statuses: [201],
              bodies: ['{"execution":1}'],
              executions: 1,
            });
            expect(await rowsWithKey(db.sql, charges, key)).toBe(1);
          } finally {
            await server.close();
          }
        });

        it(`an expired record re-claimed by ${BURST} concurrent requests: one execution, attempt 1, created_at renewed`, async () => {
          const { server, executions } = await app();
          const key = newKey('expired');
          try {
            expect((await postJson(`${server.url}/c`, { a: 1 }, { key })).status).toBe(201);
            await db.sql.query(`UPDATE ${records} SET expires_at = now() - interval '1 second', created_at = now() - interval '2 days' WHERE key = $1`, [key]);
            const { rows: before } = await db.sql.query<{ t: string }>('SELECT clock_timestamp()::text AS t');
            const answers = await Promise.all(Array.from({ length: BURST }, () => postJson(`${server.url}/c`, { a: 1 }, { key })));
            const { rows } = await db.sql.query<{ attempt: number; fresh: boolean; n: number }>(
              `SELECT attempt, created_at >= $2::timestamptz - interval '1 second' AS fresh, (SELECT count(*)::int FROM ${records} WHERE key = $1) AS n FROM ${records} WHERE key = $1`,
              [key, before[0]!.t],
            );
            expect({
              statuses: [...new Set(answers.map((a) => a.status))],
              bodies: [...new Set(answers.map((a) => a.text))],
              executions: executions(),
              record: rows[0],
            }).toEqual({ statuses: [201], bodies: ['{"execution":2}'], executions: 2, record: { attempt: 1, fresh: true, n: 1 } });
          } finally {
            await server.close();
          }
        });

        it.runIf(!transactional)(
          `a lapsed lease taken over by ${BURST} concurrent retries while the original still runs: one takeover, the original fenced (lease mode only: a transactional claim has no lease to lapse, skipped there)`,
          async () => {
            let open!: () => void;
            const gate = new Promise<void>((resolve) => (open = resolve));
            const { server, executions, inHandler } = await app(gate);
            const key = newKey('lapsed');
            try {
              const original = postJson(`${server.url}/c`, { a: 1 }, { key });
              await inHandler;
              await db.sql.query(`UPDATE ${records} SET lease_expires_at = now() - interval '1 second' WHERE key = $1`, [key]);
              const retries = await Promise.all(Array.from({ length: BURST }, () => postJson(`${server.url}/c`, { a: 1 }, { key })));
              open();
              const first = await original;
              const { rows } = await db.sql.query<{ attempt: number; status: string; n: number }>(
                `SELECT attempt, status, (SELECT count(*)::int FROM ${records} WHERE key = $1) AS n FROM ${records} WHERE key = $1`,
                [key],
              );
              expect({
                executions: executions(),
                retries: [...new Set(retries.map((a) => `${a.status} ${a.text}`))],
                original: first.status,
                record: rows[0],
              }).toEqual({ executions: 2, retries: ['201 {"execution":2}'], original: 503, record: { attempt: 2, status: 'completed', n: 1 } });
            } finally {
              open();
              await server.close();
            }
          },
        );
      });
    }
  }
}
