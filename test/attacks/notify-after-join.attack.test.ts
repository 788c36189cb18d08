import Koa from 'koa';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { signal } from '../helpers/events.js';

/**
 * The completion's and the release's NOTIFY now go through `… FROM done LEFT JOIN pg_catalog.pg_am ON false`.
 * A waiter announced for a key (store.watch) must get the key's notification when the owner completes, when it
 * releases (handler threw), and when a transactional claim commits; and each waiter's HTTP duplicate must be
 * answered. Observed with an independent LISTEN on the store's channel.
 */

const SCOPE = 'tenant-a';
const channelOf = (schema: string) => `koa_idempotency_${createHash('sha256').update(`${schema}.idempotency_records`).digest('hex').slice(0, 16)}`;
const notifyIdOf = (scope: string, key: string) => createHash('sha256').update(`${scope.length}:${scope}${key}`).digest('hex').slice(0, 32);

for (const target of databaseTargets()) {
  describe(`wake-ups through the coordinator-only join on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let counter = 0;
    const payloads: string[] = [];
    const arrivals = new Map<string, () => void>();
    let stopListening: () => Promise<void> = async () => undefined;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_notify');
      store = await db.store({ replayCacheEntries: 0 });
      const onPayload = (payload: string) => {
        payloads.push(payload);
        arrivals.get(payload)?.();
      };
      if (db.kind === 'postgres') {
        const client = new pg.Client({ connectionString: DATABASE_URL });
        await client.connect();
        client.on('notification', (m) => onPayload(m.payload ?? ''));
        await client.query(`LISTEN "${channelOf(db.schema)}"`);
        stopListening = () => client.end();
      } else {
        const pglite = (db.source as { pglite: import('@electric-sql/pglite').PGlite }).pglite;
        const unlisten = await pglite.listen(channelOf(db.schema), onPayload);
        stopListening = unlisten;
      }
    });
    afterAll(async () => {
      await stopListening();
      await db?.close();
    });

    const notified = (key: string) => {
      const s = signal();
      arrivals.set(notifyIdOf(SCOPE, key), () => s.fire());
      return s.promise;
    };
    const within = <T>(promise: Promise<T>, ms: number, what: string) =>
      Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms).unref())]);

    const cases: Array<{ name: string; transactional: boolean; fail: boolean }> = [
      { name: 'a lease-mode completion', transactional: false, fail: false },
      { name: 'a lease-mode release (the handler threw)', transactional: false, fail: true },
      { name: 'a transactional commit', transactional: true, fail: false },
      { name: 'a transactional rollback (the handler threw)', transactional: true, fail: true },
    ];
    for (const c of cases) {
      it(`${c.name} notifies the key's announced waiter, and the waiting duplicate is answered`, async () => {
        const started = signal();
        const gate = signal();
        let executions = 0;
        const koa = new Koa();
        koa.silent = true;
        koa.use(bodyParser());
        koa.use(idempotency({ store, scope: () => SCOPE, transactional: c.transactional, onInProgress: 'wait', waitMs: 20_000, waitRecheckMs: 20_000 }));
        koa.use(async (ctx) => {
          executions++;
          if (executions === 1) {
            started.fire();
            await gate.promise;
            if (c.fail) throw new Error('handler failed');
          }
          ctx.status = 201;
          ctx.body = { execution: executions };
        });
        const server = await serve(koa);
        const key = newKey('wake');
        const watch = await store.watch(SCOPE, key);
        try {
          const first = postJson(`${server.url}/c`, {}, { key });
          await started.promise;
          const duplicate = postJson(`${server.url}/c`, {}, { key });
          const wake = notified(key);
          gate.fire();
          await within(wake, 5_000, 'notification');
          const [a, b] = await Promise.all([first, duplicate]);
          if (c.fail) {
            expect(a.status).toBe(500);
            expect(b.status).toBe(201);
          } else {
            expect([a.status, b.status, b.headers.get('idempotent-replayed')]).toEqual([201, 201, 'true']);
          }
          expect(executions).toBe(c.fail ? 2 : 1);
        } finally {
          watch.close();
          await server.close();
        }
      });
    }
  });
}
