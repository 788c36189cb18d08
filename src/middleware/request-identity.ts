import { createHash } from 'node:crypto';
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
  if (typeof value === 'string') return storableScope(value);
  // NaN (Number(undefined)) and the infinities would be one shared scope, as String(undefined) would.
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  // A BigInt's decimal string can be of any length: it is measured as a string is.
  if (typeof value === 'bigint') return storableScope(String(value));
  throw new TypeError(
    `koa-idempotency: the scope function must return a string or a finite number; got ${value === null ? 'null' : String(typeof value === 'number' ? value : typeof value)}`,
  );
}

/** A lone UTF-16 surrogate, which no UTF-8 text can hold. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The longest scope, in UTF-8 bytes: with a key of at most 1024 characters (resolved-options.ts), the entry of
 * Postgres' index on (scope, key) stays under its btree limit of about 2700 bytes. A longer scope would fail
 * every claim with a retryable 503.
 */
export const MAX_SCOPE_BYTES = 1024;

/**
 * Postgres text holds neither NUL nor a lone surrogate: node-postgres sends a lone surrogate as U+FFFD, so two
 * scopes differing only there would share one record (one tenant replayed another's response), and a NUL is
 * refused by Postgres. Such a scope, or one too long to index, is the scope function's fault, refused alike on
 * every store.
 */
function storableScope(scope: string): string {
  if (scope.includes('\0') || LONE_SURROGATE.test(scope)) {
    throw new TypeError('koa-idempotency: the scope function returned a string Postgres text cannot hold (a NUL or a lone surrogate)');
  }
  // A UTF-16 unit takes at most 3 UTF-8 bytes, so only a scope over 341 units needs counting.
  if (scope.length * 3 > MAX_SCOPE_BYTES && Buffer.byteLength(scope) > MAX_SCOPE_BYTES) {
    throw new TypeError(`koa-idempotency: the scope function returned a scope longer than ${MAX_SCOPE_BYTES} UTF-8 bytes`);
  }
  return scope;
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
 * Which body goes into the fingerprint. A parser's `{}` is ambiguous: @koa/bodyparser (and koa-body) leave
 * `ctx.request.body` as `{}` for a media type they do not parse (text, XML, octet-stream, multipart,
 * merge-patch+json by default; form too when not enabled), without reading it, and a JSON `{}` parses to the
 * same value. Trusting it made every body of such a type look the same under a key: a different amount was
 * answered with the first request's stored response.
 *
 * - a parsed body other than `{}`: fingerprinted as before (JSON canonicalised, text as sent), so stored
 *   fingerprints hold;
 * - `{}` with the raw bytes kept in `ctx.request.rawBody`: the bytes, unless they are JSON's empty object or
 *   nothing (then `{}` as before); so whatever the parser made of them, different bytes never match (the
 *   bytes `{}` of another media type are bytes like any others: they are no parse of nothing);
 * - `{}` without raw bytes: a parse only if the request has no body, or has a JSON one that was read to its
 *   end (koa-body keeps no raw bytes); a parser that left a type alone leaves its stream unread;
 * - no parsed body: the raw bytes where kept; else unread when the request has a body (Content-Length > 0,
 *   or a Transfer-Encoding such as chunked); else none.
 */
function requestBody(ctx: Context): Pick<FingerprintInput, 'body' | 'rawBody'> | 'unread' {
  const body = (ctx.request as { body?: unknown }).body;
  const raw = (ctx.request as { rawBody?: unknown }).rawBody;
  const rawBody = typeof raw === 'string' || raw instanceof Uint8Array ? raw : undefined;
  const files = rawBody === undefined ? uploadedFiles(ctx) : undefined;
  if (files === 'unread') return 'unread';
  if (files !== undefined) return { body: { fields: body ?? {}, files } };
  if (body !== undefined && !isEmptyPlainObject(body)) return { body };
  if (rawBody !== undefined) return body !== undefined && isJson(ctx) && isEmptyObjectText(rawBody) ? { body } : { body: undefined, rawBody };
  if (!hasBody(ctx)) return { body };
  if (body !== undefined && ctx.req.readableEnded && isJson(ctx)) return { body };
  return 'unread';
}

function isJson(ctx: Context): boolean {
  return Boolean(ctx.request.is('json', '+json'));
}

function hasBody(ctx: Context): boolean {
  const length = ctx.req.headers['content-length'];
  return (length !== undefined && Number(length) > 0) || ctx.req.headers['transfer-encoding'] !== undefined;
}

/** Bytes that parse to `{}` or to nothing: only braces and JSON white space. */
function isEmptyObjectText(raw: string | Uint8Array): boolean {
  const text = typeof raw === 'string' ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
  return /^[ \t\n\r]*(\{[ \t\n\r]*\})?[ \t\n\r]*$/.test(text);
}

function isEmptyPlainObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return (prototype === Object.prototype || prototype === null) && Reflect.ownKeys(value).length === 0;
}

/** One uploaded file as the fingerprint sees it: its field, name, media type, size and a digest of its bytes. */
type FileIdentity = [field: string, name: unknown, mediaType: unknown, size: unknown, digest: string];

/**
 * The files a multipart parser took out of the body: koa-body (formidable) and @koa/multer leave only the
 * fields in `ctx.request.body`, so fields alone made an upload of another file under the same key a replay of
 * the first. A file counts by a digest of its bytes: formidable's `hash` (koa-body with
 * `formidable: { hashAlgorithm: 'sha256' }`) or multer's in-memory `buffer`; a file with neither cannot be
 * told from another of its size, so the body is `unread` (415) rather than guessed.
 */
function uploadedFiles(ctx: Context): FileIdentity[] | 'unread' | undefined {
  const holder = ctx as unknown as { files?: unknown; file?: unknown; request: { files?: unknown; file?: unknown } };
  const identities: FileIdentity[] = [];
  for (const [field, value] of fileEntries(holder.request.files ?? holder.files)) {
    for (const file of Array.isArray(value) ? value : [value]) {
      const identity = fileIdentity(field, file);
      if (identity === undefined) return 'unread';
      identities.push(identity);
    }
  }
  const single = holder.request.file ?? holder.file;
  if (single !== undefined) {
    const identity = fileIdentity('', single);
    if (identity === undefined) return 'unread';
    identities.push(identity);
  }
  return identities.length === 0 ? undefined : identities;
}

function fileEntries(files: unknown): Array<[string, unknown]> {
  if (files === undefined || files === null || typeof files !== 'object') return [];
  // multer's array() gives a list of files, each naming its field; koa-body and multer's fields() a map.
  if (Array.isArray(files)) return files.map((file) => [fieldName(file), file]);
  return Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function fieldName(file: unknown): string {
  const field = (file as { fieldname?: unknown } | null)?.fieldname;
  return typeof field === 'string' ? field : '';
}

function fileIdentity(field: string, file: unknown): FileIdentity | undefined {
  if (typeof file !== 'object' || file === null) return undefined;
  const upload = file as { hash?: unknown; buffer?: unknown; originalFilename?: unknown; originalname?: unknown; mimetype?: unknown; size?: unknown };
  const digest =
    typeof upload.hash === 'string' && upload.hash !== ''
      ? upload.hash
      : upload.buffer instanceof Uint8Array
        ? createHash('sha256').update(upload.buffer).digest('hex')
        : undefined;
  if (digest === undefined) return undefined;
  return [field, upload.originalFilename ?? upload.originalname ?? null, upload.mimetype ?? null, upload.size ?? null, digest];
}
