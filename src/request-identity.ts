import type { Context } from 'koa';
import type { FingerprintInput } from './fingerprint.js';

/**
 * What identifies a Koa request to the middleware: the scope that owns its key, and the parts of the
 * request that go into its fingerprint, read the way the client sent them.
 */

/**
 * The scope as the store and the replay cache compare it: a string. A number (an account id) is used as
 * its decimal string, so it finds the same record, and the same cache entry, as the string does. Anything
 * else is refused: `String(undefined)` would put every request without an account into one shared scope.
 */
export function scopeString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new TypeError(`koa-idempotency: the scope function must return a string or a number; got ${value === null ? 'null' : typeof value}`);
}

export type FingerprintReading = { kind: 'read'; input: FingerprintInput } | { kind: 'unread' };

/**
 * The fingerprint's input, or `unread` for a request body that neither a body parser parsed nor anything
 * kept raw: leaving it out would make every body under the key look the same.
 */
export function readFingerprintInput(ctx: Context, headerNames: readonly string[]): FingerprintReading {
  const body = requestBody(ctx);
  if (body === 'unread') return { kind: 'unread' };
  const headers: Record<string, string | string[] | undefined> = {};
  for (const name of headerNames) headers[name] = ctx.req.headers[name];
  return {
    kind: 'read',
    input: { method: ctx.method, path: originalPath(ctx), querystring: ctx.querystring, headers, ...body, mediaType: ctx.request.type },
  };
}

/**
 * The path the client asked for. `ctx.path` is what is left after a mount (koa-mount strips its prefix),
 * so two mounted apps sharing a store and a scope would see the same path and replay each other's
 * responses. An origin-form target ends at `?`; an absolute-form one (`http://host/path`) is parsed.
 */
function originalPath(ctx: Context): string {
  const target = ctx.originalUrl;
  if (!target.startsWith('/')) return URL.canParse(target) ? new URL(target).pathname : ctx.path;
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

/**
 * Which body goes into the fingerprint. @koa/bodyparser leaves `ctx.request.body` as `{}` for a media
 * type it does not parse (text, XML, octet-stream, multipart, merge-patch+json by default) and sets
 * `ctx.request.rawBody` only for the types it parses; so `{}` without raw bytes is a placeholder, not a body.
 *
 * - a parsed body: fingerprinted as before (JSON canonicalised, text as sent), so stored fingerprints hold;
 * - else the raw bytes, where something kept them in `ctx.request.rawBody`;
 * - else, when the request has a body (Content-Length > 0, or a Transfer-Encoding such as chunked): unread;
 * - else what the parser left (a placeholder `{}` of a bodyless request, or undefined), as before.
 */
function requestBody(ctx: Context): Pick<FingerprintInput, 'body' | 'rawBody'> | 'unread' {
  const body = (ctx.request as { body?: unknown }).body;
  const raw = (ctx.request as { rawBody?: unknown }).rawBody;
  const rawBody = typeof raw === 'string' || raw instanceof Uint8Array ? raw : undefined;
  const parsed = body !== undefined && !(rawBody === undefined && isEmptyPlainObject(body));
  if (parsed) return { body };
  if (rawBody !== undefined) return { body: undefined, rawBody };
  if (hasBody(ctx)) return 'unread';
  return { body };
}

function hasBody(ctx: Context): boolean {
  const length = ctx.req.headers['content-length'];
  return (length !== undefined && Number(length) > 0) || ctx.req.headers['transfer-encoding'] !== undefined;
}

function isEmptyPlainObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return (prototype === Object.prototype || prototype === null) && Reflect.ownKeys(value).length === 0;
}
