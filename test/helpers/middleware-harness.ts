import { afterAll, afterEach, beforeAll } from 'vitest';
import type { IdempotencyOptions } from '../../src/index.js';
import { createTestApp, type TestAppOptions } from './app.js';
import type { DatabaseTarget, TestDatabase } from './databases.js';
import { serve } from './http.js';

/**
 * What the middleware tests on each database (test/middleware-*.test.ts) share: the file's schema on `target`
 * (named after `prefix`), opened in the describe block that calls it, and `start`, which serves the test app
 * (test/helpers/app.ts) on a new store; the servers close after each test. `db` is set once the block's
 * beforeAll has run.
 */

let keySeq = 0;
export const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

export function middlewareHarness(target: DatabaseTarget, prefix: string) {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open(prefix);
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(() => db?.close());

  async function start(options: Partial<IdempotencyOptions> = {}, respond?: TestAppOptions['respond']) {
    const store = await db.store();
    const { app, executions } = createTestApp({ store, options, respond });
    const server = await serve(app);
    servers.push(server);
    return { url: server.url, executions, store };
  }

  return {
    get db() {
      return db;
    },
    servers,
    start,
  };
}
