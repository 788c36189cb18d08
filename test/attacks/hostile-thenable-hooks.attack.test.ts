import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, MemoryStore, type IdempotencyOptions } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on the hooks that must answer synchronously (`required`, `shouldStore`, `routeName`) when they
 * return a hostile thenable rather than a value: a `then` getter that throws, a `then` that throws, a `then` that
 * calls both callbacks twice, a `then` readable once only, a rejected promise. Each must be taken as the hook's
 * failure with its documented fallback: no 500 the fallback does not promise, no hang, no unhandled rejection.
 * And a hook given as an async generator function (whose answer is an object, truthy, never a boolean): refused at
 * construction like an async function, or its answer taken as a failure, never as "store this 5xx".
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

/** Thenables whose `then` misbehaves in each way a caller's code can. */
function hostileThenables(): Array<[string, () => unknown]> {
  return [
    [
      'a then getter that throws',
      () =>
        Object.defineProperty({}, 'then', {
          get() {
            throw new Error('then getter');
          },
        }),
    ],
    [
      'a then that throws',
      () => ({
        then() {
          throw new Error('then throws');
        },
      }),
    ],
    [
      'a then that calls both callbacks twice',
      () => ({
        then(resolve: (value: unknown) => void, reject: (error: unknown) => void) {
          resolve(true);
          resolve(true);
          reject?.(new Error('late'));
          reject?.(new Error('later'));
        },
      }),
    ],
    [
      'a then readable once only',
      () => {
        let reads = 0;
        return Object.defineProperty({}, 'then', {
          get() {
            if (++reads > 1) throw new Error('then read twice');
            return () => undefined;
          },
        });
      },
    ],
    ['a rejected promise', () => Promise.reject(new Error('rejected'))],
  ];
}

describe('a hook returning a hostile thenable', () => {
  const closing: Array<() => Promise<void>> = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  beforeAll(() => {
    process.on('unhandledRejection', onUnhandled);
  });
  afterAll(() => {
    process.off('unhandledRejection', onUnhandled);
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });

  async function start(options: Partial<IdempotencyOptions>, respond?: Parameters<typeof createTestApp>[0]['respond']) {
    const { app, executions } = createTestApp({ store: new MemoryStore(), options, respond });
    const http = await serve(app);
    closing.push(() => http.close());
    return { url: http.url, executions };
  }

  /** Lets pending microtasks and one macrotask run, so a late rejection would have been reported. */
  const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

  it.each(hostileThenables())('required returning %s: fails closed (400 key-missing without a key, served with one)', async (_label, make) => {
    const { url } = await start({ required: make as unknown as () => boolean });
    const keyless = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a' });
    const keyed = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a', key: newKey('required') });
    await settled();
    expect({ keyless: keyless.status, keyed: keyed.status, unhandled }).toEqual({ keyless: 400, keyed: 201, unhandled: [] });
  });

  it.each(hostileThenables())('shouldStore returning %s: 500 request-failed, the key released, the retry runs again', async (_label, make) => {
    const { url, executions } = await start({ shouldStore: make as unknown as () => boolean });
    const key = newKey('should-store');
    const first = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a', key });
    const retry = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a', key });
    await settled();
    expect({ first: first.status, retry: retry.status, executions: executions.length, unhandled }).toEqual({
      first: 500,
      retry: 500,
      executions: 2,
      unhandled: [],
    });
  });

  it.each(hostileThenables())('routeName returning %s: the request is served under the default label', async (_label, make) => {
    const { url, executions } = await start({ routeName: make as unknown as () => string });
    const key = newKey('route-name');
    const first = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a', key });
    const retry = await postJson(`${url}/orders`, { amount: 1 }, { account: 'a', key });
    await settled();
    expect({ first: first.status, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions: executions.length, unhandled }).toEqual({
      first: 201,
      retry: 201,
      replayed: 'true',
      executions: 1,
      unhandled: [],
    });
  });

  it('async functions bound or wrapped in a Proxy are refused at construction like async functions', () => {
    const bound = (async () => false).bind(null);
    const proxied = new Proxy(async () => false, {});
    expect(() => createTestApp({ store: new MemoryStore(), options: { required: bound as unknown as () => boolean } })).toThrow(IdempotencyConfigError);
    expect(() => createTestApp({ store: new MemoryStore(), options: { shouldStore: proxied as unknown as () => boolean } })).toThrow(IdempotencyConfigError);
  });

  it('shouldStore given as an async generator function: refused at construction, or a 503 is not stored (the retry runs again)', async () => {
    // An async generator's answer is an object: truthy, never the boolean the caller meant (`yield status < 500`).
    const shouldStore = async function* (status: number) {
      yield status < 500;
    };
    let started: Awaited<ReturnType<typeof start>>;
    try {
      started = await start({ shouldStore: shouldStore as unknown as () => boolean }, (ctx, execution) => {
        ctx.status = execution === 1 ? 503 : 201;
        ctx.body = { execution };
      });
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyConfigError);
      return;
    }
    const key = newKey('async-generator');
    await postJson(`${started.url}/orders`, { amount: 1 }, { account: 'a', key });
    const retry = await postJson(`${started.url}/orders`, { amount: 1 }, { account: 'a', key });
    // What happens now: { retry: 503, replayed: 'true', executions: 1 }: the 503 was stored and is replayed.
    expect({ retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions: started.executions.length }).not.toEqual({
      retry: 503,
      replayed: 'true',
      executions: 1,
    });
  });
});
