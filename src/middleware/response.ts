import type { Context } from 'koa';
import type { StoredResponse } from '../store/types.js';
import { REPLAYED_HEADER } from '../protocol.js';
import { NOT_REPLAYABLE_REASON, type NotReplayableReason } from '../telemetry/names.js';

/**
 * Capture and replay of responses. A replay must be byte for byte what the first client would have
 * received, so the captured body is turned into the exact bytes Koa would send (a JSON body is
 * serialised the way Koa's `respond()` does) and those same bytes are sent the first time too.
 */

export type Capture = { replayable: true; response: StoredResponse } | { replayable: false; status: number; reason: NotReplayableReason };

/** Response headers at one moment: lower-case names, values as they would be stored. */
export type HeaderSnapshot = ReadonlyMap<string, string | string[]>;

/**
 * Headers that are never stored or replayed: credentials and cookies (they belong to one client
 * session, not to the operation), hop-by-hop headers (RFC 9110 section 7.6.1) and headers Koa or Node
 * recompute for each response.
 */
export const NEVER_REPLAYED_HEADERS: ReadonlySet<string> = new Set([
  'set-cookie',
  // RFC 2965's obsolete cookie header, which some servers still send beside Set-Cookie.
  'set-cookie2',
  'authorization',
  'proxy-authorization',
  'proxy-authenticate',
  // A challenge of one authentication exchange (a Digest nonce, a Bearer error): the retry gets its own.
  'www-authenticate',
  // RFC 9110 section 11.6.3 and 11.7.3: nonces and credentials of one authentication exchange.
  'authentication-info',
  'proxy-authentication-info',
  'cookie',
  'connection',
  'proxy-connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
  'idempotent-replayed',
  'traceparent',
  'tracestate',
]);

/**
 * Captures the response the downstream chain left on `ctx`. `outerHeaders` is the snapshot taken before
 * the chain ran: headers the outer middleware set (CORS, request IDs, rate limits) belong to each request,
 * and the retry sets its own, so only headers the chain added or changed are stored.
 */
export function captureResponse(ctx: Context, maxBodyBytes: number, excludedHeaders: ReadonlySet<string>, outerHeaders: HeaderSnapshot): Capture {
  // Written around Koa (`ctx.respond = false`, writes to ctx.res, a proxy): what the client got is not on
  // ctx, so a replay would invent a response (an empty body, or Koa's default 404).
  if (ctx.respond === false || ctx.res.headersSent) {
    return { replayable: false, status: ctx.status, reason: NOT_REPLAYABLE_REASON.WRITTEN_AROUND_KOA };
  }
  const body = bodyBytes(ctx.body);
  if (body === 'stream') return { replayable: false, status: ctx.status, reason: NOT_REPLAYABLE_REASON.STREAM };
  if (body !== null && body.byteLength > maxBodyBytes) return { replayable: false, status: ctx.status, reason: NOT_REPLAYABLE_REASON.TOO_LARGE };
  // Send the very bytes that are stored, so the first answer and every replay are identical.
  if (body !== null && ctx.body !== body) ctx.body = body;
  return { replayable: true, response: { status: ctx.status, headers: replayableHeaders(ctx, excludedHeaders, outerHeaders), body } };
}

export function snapshotHeaders(ctx: Context): HeaderSnapshot {
  const snapshot = new Map<string, string | string[]>();
  for (const [name, value] of Object.entries(ctx.response.headers)) {
    if (value !== undefined) snapshot.set(name.toLowerCase(), Array.isArray(value) ? value.map(String) : String(value));
  }
  return snapshot;
}

/**
 * Puts the response headers back as they were before the handler ran, for a problem that replaces the
 * handler's response: its Content-Encoding, Location or ETag described a representation that is not sent
 * (a gzip-labelled JSON problem cannot be read), while the outer middleware's headers (CORS) still apply.
 */
export function restoreHeaders(ctx: Context, snapshot: HeaderSnapshot): void {
  for (const name of Object.keys(ctx.response.headers)) {
    if (!snapshot.has(name.toLowerCase())) ctx.remove(name);
  }
  for (const [name, value] of snapshot) ctx.set(name, value);
}

/**
 * Writes a stored response. The headers are filtered again, as at storing: a record stored before a header was
 * excluded (a rolling deploy adding a session token to `excludeHeaders`) must not replay it.
 */
export function replayResponse(ctx: Context, response: StoredResponse, excluded: ReadonlySet<string>): void {
  ctx.status = response.status;
  for (const [name, value] of Object.entries(response.headers)) {
    if (replayable(name.toLowerCase(), excluded)) ctx.set(name, value);
  }
  if (response.body !== null) ctx.body = response.body;
  ctx.set(REPLAYED_HEADER, 'true');
}

/** The `replayedHeaderAliases` option: the replay marker under other servers' names too. */
export function markReplayAliases(ctx: Context, aliases: readonly string[]): void {
  for (const alias of aliases) ctx.set(alias, 'true');
}

function replayableHeaders(ctx: Context, excluded: ReadonlySet<string>, outer: HeaderSnapshot): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const snapshot = snapshotHeaders(ctx);
  const connectionOptions = connectionOptionNames(snapshot.get('connection'));
  for (const [name, value] of snapshot) {
    if (!replayable(name, excluded) || connectionOptions.has(name) || sameValue(outer.get(name), value)) continue;
    headers[name] = value;
  }
  return headers;
}

/** Whether a header (its lower-case name) may be stored and replayed: the one rule for both. */
function replayable(name: string, excluded: ReadonlySet<string>): boolean {
  return !NEVER_REPLAYED_HEADERS.has(name) && !excluded.has(name);
}

/**
 * Whether the handler took its response out of Koa's hands (its head flushed, `ctx.respond = false`): nothing
 * the middleware writes then reaches the client as Koa's answer, and a problem written into it would corrupt it.
 */
export function handlerOwnsResponse(ctx: Context): boolean {
  return ctx.headerSent || ctx.respond === false;
}

/** RFC 9110 section 7.6.1: the names a `Connection` header lists are hop-by-hop, for this connection only. */
function connectionOptionNames(connection: string | string[] | undefined): ReadonlySet<string> {
  if (connection === undefined) return new Set();
  const listed = (Array.isArray(connection) ? connection.join(',') : connection).split(',');
  return new Set(listed.map((name) => name.trim().toLowerCase()).filter((name) => name !== ''));
}

function sameValue(before: string | string[] | undefined, after: string | string[]): boolean {
  return before !== undefined && JSON.stringify(before) === JSON.stringify(after);
}

function bodyBytes(body: unknown): Buffer | null | 'stream' {
  if (body === null || body === undefined) return null;
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body);
  if (isStreamLike(body)) return 'stream';
  // Koa's respond() sends any other body as JSON.stringify(body).
  return Buffer.from(JSON.stringify(body));
}

function isStreamLike(body: unknown): boolean {
  if (typeof body !== 'object' || body === null) return false;
  return (
    typeof (body as { pipe?: unknown }).pipe === 'function' ||
    typeof (body as { getReader?: unknown }).getReader === 'function' ||
    (typeof Blob !== 'undefined' && body instanceof Blob) ||
    (typeof Response !== 'undefined' && body instanceof Response)
  );
}
