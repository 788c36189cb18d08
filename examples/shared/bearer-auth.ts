import type { Context, Next } from 'koa';

/**
 * Demo authentication shared by the example services: `Authorization: Bearer <account>` (the token IS
 * the account id); missing or malformed -> 401 problem. The account becomes `ctx.state.account`.
 */
export async function bearerAuth(ctx: Context, next: Next): Promise<void> {
  const match = /^Bearer ([A-Za-z0-9_-]{1,64})$/.exec(ctx.get('Authorization'));
  if (!match) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer');
    ctx.type = 'application/problem+json';
    ctx.body = JSON.stringify({ type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'Send Authorization: Bearer <account>.' });
    return;
  }
  ctx.state.account = match[1];
  await next();
}
