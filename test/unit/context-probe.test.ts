import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { context, propagation } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore } from '../../src/index.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * With no context manager registered (no SDK), the middleware skips building the request's baggage, which
 * nothing could read. An SDK started after the first requests must still get the correlation ID in baggage.
 */
describe('the correlation baggage and a context manager registered late', () => {
  const manager = new AsyncLocalStorageContextManager();
  afterAll(() => {
    context.disable();
  });

  it('puts the correlation ID in baggage once a context manager is registered, after requests served without one', async () => {
    const seen: Array<string | undefined> = [];
    const app = new Koa();
    app.use(bodyParser());
    app.use(idempotency({ store: new MemoryStore(), scope: () => 'acct' }));
    app.use((ctx) => {
      seen.push(propagation.getBaggage(context.active())?.getEntry('idempotency.correlation_id')?.value);
      ctx.status = 201;
    });
    const server = await serve(app);
    try {
      expect((await postJson(`${server.url}/orders`, { amount: 1 }, { key: 'before-sdk' })).status).toBe(201);
      expect(context.setGlobalContextManager(manager.enable())).toBe(true);
      expect((await postJson(`${server.url}/orders`, { amount: 1 }, { key: 'after-sdk' })).status).toBe(201);
      expect((await postJson(`${server.url}/orders`, { amount: 1 }, { key: 'after-sdk-again' })).status).toBe(201);
    } finally {
      await server.close();
    }
    expect(seen[0]).toBeUndefined();
    expect(seen[1]).toMatch(/^[0-9a-f]{32}$/);
    expect(seen[2]).toMatch(/^[0-9a-f]{32}$/);
    expect(seen[2]).not.toBe(seen[1]);
  });
});
