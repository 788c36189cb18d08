import type { Middleware } from 'koa';

/**
 * Turns every error into an RFC 9457 problem response: a client error keeps its status (a body parser's
 * 400 or 413), anything else is a 500 without internals. The idempotency middleware answers its own
 * problems; this covers the rest of the app.
 */
export function problemErrors(): Middleware {
  return async function problemErrorsMiddleware(ctx, next) {
    try {
      await next();
    } catch (error) {
      const status = httpStatus(error);
      ctx.status = status;
      ctx.type = 'application/problem+json';
      ctx.body = JSON.stringify({
        type: 'about:blank',
        title: status < 500 ? (error as Error).message : 'Internal Server Error',
        status,
      });
      if (status >= 500) ctx.app.emit('error', error, ctx);
    }
  };
}

function httpStatus(error: unknown): number {
  const candidate = (error as { status?: unknown; statusCode?: unknown }).status ?? (error as { statusCode?: unknown }).statusCode;
  const exposed = (error as { expose?: unknown }).expose;
  return typeof candidate === 'number' && candidate >= 400 && candidate < 500 && exposed !== false ? candidate : 500;
}
