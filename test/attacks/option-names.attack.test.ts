import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on the names of idempotency()'s options, as a JavaScript caller writes them: without a
 * type checker, a misspelt option is the one mistake no value check sees. `transaction: true` (for
 * `transactional`) silently runs lease mode, so the handler's writes and its stored response no longer commit
 * together, which the caller asked for; `telemetry: { recordRawkey: true }` silently records nothing. An
 * option name the middleware does not know must be refused at construction with an IdempotencyConfigError.
 */

describe('a misspelt option name', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_option_names');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  function construction(options: Record<string, unknown>): string {
    try {
      idempotency({ store: postgres, ...options });
      return 'accepted';
    } catch (error) {
      return error instanceof IdempotencyConfigError ? 'refused' : `threw ${(error as Error).name}`;
    }
  }

  /** `transaction` for `transactional`: the handler runs without ctx.idempotency.db, in lease mode. */
  it('transaction: true is refused at construction, not run in lease mode without the transaction the caller asked for', async () => {
    const verdict = construction({ transaction: true });
    if (verdict !== 'accepted') {
      expect(verdict).toBe('refused');
      return;
    }
    let handlerDb: unknown = 'not run';
    const { app } = createTestApp({
      store: postgres,
      options: { transaction: true } as Partial<IdempotencyOptions>,
      respond: (ctx) => {
        handlerDb = ctx.idempotency?.db;
        ctx.status = 201;
        ctx.body = { order: 1 };
      },
    });
    const http = await serve(app);
    closing.push(() => http.close());
    await postJson(`${http.url}/orders`, { amount: 1 }, { key: `transaction-${Date.now()}`, account: 'a' });
    expect({ verdict, handlerDb: handlerDb === undefined ? 'none (lease mode)' : 'a transaction' }).toEqual({ verdict: 'refused', handlerDb: 'a transaction' });
  });

  it.each([
    ['onInProgres', { onInProgres: 'wait' }],
    ['ttl', { ttl: 60 }],
    ['telemetry.recordRawkey', { telemetry: { recordRawkey: true } }],
  ])('%s is refused at construction', (_name, options) => {
    expect(construction(options)).toBe('refused');
  });
});
