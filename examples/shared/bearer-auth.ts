import type { Context, Next } from 'koa';
import { respondProblem } from './problem.js';

/**
 * Demo authentication shared by the example services: `Authorization: Bearer <account>` (the token IS
 * the account id); missing or malformed -> 401 problem. The account becomes `ctx.state.account`.
 */
export async function bearerAuth(ctx: Context, next: Next): Promise<void> {
  const match = /^Bearer ([A-Za-z0-9_-]{1,64})$/.exec(ctx.get('Authorization'));
  if (!match) {
    ctx.set('WWW-Authenticate', 'Bearer');
    return respondProblem(ctx, { type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'Send Authorization: Bearer <account>.' });
  }
  ctx.state.account = match[1];
  await next();
}
