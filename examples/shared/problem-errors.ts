import type { Middleware } from 'koa';
import { respondProblem } from './problem.js';

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
      respondProblem(ctx, { type: 'about:blank', title: status < 500 ? (error as Error).message : 'Internal Server Error', status });
      if (status >= 500) ctx.app.emit('error', error, ctx);
    }
  };
}

function httpStatus(error: unknown): number {
  if (isDecompressionError(error)) return 400;
  const candidate = (error as { status?: unknown; statusCode?: unknown }).status ?? (error as { statusCode?: unknown }).statusCode;
  const exposed = (error as { expose?: unknown }).expose;
  return typeof candidate === 'number' && candidate >= 400 && candidate < 500 && exposed !== false ? candidate : 500;
}

/**
 * A request body whose Content-Encoding lies (not really gzip, deflate or br) fails in zlib, and the body
 * parser passes that error on without a status: it is the client's fault, a 400, not a 500.
 * Node's zlib codes start with `Z_` (gzip, deflate) or `ERR__` (brotli).
 */
function isDecompressionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && typeof (error as { errno?: unknown }).errno === 'number' && (code.startsWith('Z_') || code.startsWith('ERR__'));
}
