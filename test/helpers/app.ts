import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { idempotency, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';

/**
 * A test API around the middleware. `POST /orders` counts its executions and answers what `respond`
 * says; the caller is `X-Account`, else the
 * `Authorization` header (the idempotency scope).
 */
export interface TestAppOptions {
  store: IdempotencyStore;
  options?: Partial<IdempotencyOptions>;
  respond?: (ctx: Koa.Context, execution: number) => void | Promise<void>;
}

export function createTestApp({ store, options, respond }: TestAppOptions) {
  const executions: Array<{ account: string; body: unknown }> = [];
  const app = new Koa();
  const router = new Router();
  const handler = async (ctx: Koa.Context) => {
    executions.push({ account: account(ctx), body: ctx.request.body });
    if (respond) return respond(ctx, executions.length);
    ctx.status = 201;
    ctx.set('Location', `/orders/${executions.length}`);
    ctx.body = { order: executions.length, received: ctx.request.body };
  };
  const middleware = idempotency({ store, scope: account, ...options });
  router.post('/orders', middleware, handler);
  router.post('/orders/:id/refund', middleware, handler);
  router.patch('/orders/:id', middleware, handler);
  router.get('/orders', middleware, handler);
  app.use(bodyParser({ enableTypes: ['json', 'text'] }));
  app.use(router.routes());
  app.silent = true;
  return { app, executions };
}

function account(ctx: Koa.Context): string {
  return ctx.get('X-Account') || ctx.get('Authorization');
}
