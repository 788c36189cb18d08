import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { createTestApp } from './helpers/app.js';
import { postJson, serve } from './helpers/http.js';

/** The middleware when its store cannot be reached: 503 with Retry-After, the handler never runs. */

describe('when the store is unreachable', () => {
  it.each([
    [
      'a pg pool whose server refuses connections',
      async () => {
        const pool = new pg.Pool({ host: '127.0.0.1', port: 1, connectionTimeoutMillis: 1_000 });
        return { store: new PostgresStore({ pool }), close: () => pool.end() };
      },
    ],
    [
      'a closed PGlite',
      async () => {
        const pglite = await PGlite.create();
        await pglite.close();
        return { store: new PostgresStore({ pglite }), close: async () => undefined };
      },
    ],
  ])('answers 503 problem with Retry-After and never runs the handler (%s)', async (_label, open) => {
    const { store, close } = await open();
    const { app, executions } = createTestApp({ store });
    const server = await serve(app);
    try {
      const answer = await postJson(`${server.url}/orders`, { amount: 5 }, { key: 'down-1', account: 'a' });
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('5');
      expect(JSON.parse(answer.text).type).toBe(problemType('storeUnavailable'));
      expect(executions).toHaveLength(0);
    } finally {
      await server.close();
      await store.close();
      await close();
    }
  });
});
