import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on how idempotency() reads its array options (header names, methods): it checks one read
 * of the array and uses another. An array whose elements are read through a proxy or a getter (a lazily
 * computed config, a reactive store's array) can pass the check and then give the middleware something else:
 * a name that is no header name, a method that is no string. Whatever the array gives, the middleware must
 * refuse it at construction with an IdempotencyConfigError, or use exactly what it checked.
 */

/** An array whose element 0 is `first` on its first read and `later` on every read after. */
function changingArray(first: unknown, later: unknown): string[] {
  let reads = 0;
  return new Proxy([first], {
    get(target, property, receiver) {
      if (property === '0') return reads++ === 0 ? first : later;
      return Reflect.get(target, property, receiver) as unknown;
    },
  }) as string[];
}

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('an array option read more than once', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_option_reads');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** The alias passed the token check as `X-Ok`, then was kept as `X Bad`, which Node refuses to set. */
  it('replayedHeaderAliases that reads `X-Ok` then `X Bad` is refused at construction, or every replay is still answered (no 500)', async () => {
    let testApp: ReturnType<typeof createTestApp>;
    try {
      testApp = createTestApp({ store: postgres, options: { replayedHeaderAliases: changingArray('X-Ok', 'X Bad') } });
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyConfigError);
      return;
    }
    const { app, executions } = testApp;
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey('changing-alias');
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect({ first: first.status, retry: retry.status, retryBody: retry.text.slice(0, 40), executions: executions.length }).toEqual({
      first: 201,
      retry: 201,
      retryBody: first.text.slice(0, 40),
      executions: 1,
    });
  });

  it('methods that reads `POST` then a number is refused with an IdempotencyConfigError, not a TypeError from inside', () => {
    let thrown: unknown;
    try {
      idempotency({ store: postgres, methods: changingArray('POST', 5) });
    } catch (error) {
      thrown = error;
    }
    expect(
      thrown === undefined || thrown instanceof IdempotencyConfigError
        ? 'accepted or refused as a bad option'
        : `${(thrown as Error).name}: ${(thrown as Error).message}`,
    ).toBe('accepted or refused as a bad option');
  });
});
