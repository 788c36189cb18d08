import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, type IdempotencyOptions } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on how idempotency() reads its options object: it copies the object's own enumerable
 * properties (`{ ...given }`), then refuses unknown names. An options object a caller builds in other legal ways
 * (a class with accessors, defaults shared through a prototype with Object.create, a property defined
 * non-enumerable) type-checks as IdempotencyOptions, yet the options it holds there are dropped without a word:
 * `transactional: true` from such an object runs lease mode, the very silent downgrade the unknown-name check
 * exists to prevent. Each option given must be honoured, or refused at construction. A config spread into a
 * literal, and a class with plain fields, must keep working.
 */

describe('idempotency() options given as objects a caller builds', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_option_objects');
    store = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** Which mode served a keyed request: transactional when the handler got `ctx.idempotency.db`. */
  async function modeServed(options: IdempotencyOptions): Promise<'transactional' | 'lease' | 'refused'> {
    let middleware: Koa.Middleware;
    try {
      middleware = idempotency(options);
    } catch (error) {
      if (error instanceof IdempotencyConfigError) return 'refused';
      throw error;
    }
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(middleware);
    app.use((ctx) => {
      ctx.status = 201;
      ctx.body = { mode: ctx.idempotency?.db ? 'transactional' : 'lease' };
    });
    const http = await serve(app);
    closing.push(() => http.close());
    const answer = await postJson(`${http.url}/orders`, { amount: 1 }, { key: `mode-${Date.now()}-${Math.random()}` });
    return (JSON.parse(answer.text) as { mode: 'transactional' | 'lease' }).mode;
  }

  it('a config object spread into the literal runs transactional mode', async () => {
    const config = { transactional: true, onInProgress: 'wait' as const };
    expect(await modeServed({ store, ...config })).toBe('transactional');
  });

  it('a class with plain fields runs transactional mode', async () => {
    class Options {
      store = store;
      transactional = true;
    }
    expect(await modeServed(new Options())).toBe('transactional');
  });

  it('a class whose transactional is an accessor: transactional mode, or refused, never lease mode silently', async () => {
    class Options {
      store = store;
      get transactional() {
        return true;
      }
    }
    // What happens now: 'lease': the accessor lives on the prototype, and `{ ...given }` does not copy it.
    expect(await modeServed(new Options())).not.toBe('lease');
  });

  it('defaults shared through a prototype (Object.create): transactional mode, or refused, never lease mode silently', async () => {
    const defaults: Partial<IdempotencyOptions> = { transactional: true, onInProgress: 'wait' };
    const options = Object.assign(Object.create(defaults) as IdempotencyOptions, { store });
    expect(await modeServed(options)).not.toBe('lease');
  });

  it('transactional defined non-enumerable: transactional mode, or refused, never lease mode silently', async () => {
    const options = Object.defineProperty({ store }, 'transactional', { value: true, enumerable: false }) as IdempotencyOptions;
    expect(await modeServed(options)).not.toBe('lease');
  });
});
