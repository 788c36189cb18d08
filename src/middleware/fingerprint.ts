import { hash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { UnfingerprintableBodyError } from '../errors.js';

/**
 * The request fingerprint: what makes a retry "the same request". Pure, no I/O.
 *
 * Version 1 hashes (SHA-256) the method, the path, the query parameters sorted by name, the allow-listed
 * headers (lower-cased names, sorted), the media type and the body with its kind. A JSON body is
 * canonicalised with RFC 8785 (JCS), so key order and white space do not matter; a string or byte body is
 * hashed as sent, and so are the raw bytes of a body no parser read. The media type and the body kind keep
 * a JSON string `"abc"` apart from the text `abc`, and an empty string apart from no body. The version is
 * stored with each record: a later algorithm compares only fingerprints of its own version.
 *
 * The raw kind was added within version 1: it is only ever computed for a body that version 1 used to
 * leave out (and that is now refused when its bytes are not kept), so no fingerprint computed before
 * changes and the version stays.
 */
export const FINGERPRINT_VERSION = 1;

export interface FingerprintInput {
  method: string;
  path: string;
  /** The raw query string, without `?`. */
  querystring: string;
  /** Header name (lower case) to value, already filtered to the allow-list. */
  headers: Record<string, string | string[] | undefined>;
  /** The parsed body (`ctx.request.body`), a string, bytes, or undefined for none. */
  body: unknown;
  /** Raw bytes of a body no parser read (`ctx.request.rawBody`); used only when `body` is undefined. */
  rawBody?: string | Uint8Array | undefined;
  /** The request's media type without parameters (`ctx.request.type`), '' when none. */
  mediaType?: string;
}

export type BodyKind = 'none' | 'raw' | 'text' | 'bytes' | 'json';

/** A request's parts as version 1 reads them, each normalised once: the fingerprint hashes them together, fingerprint-parts.ts one by one. */
export interface NormalizedRequest {
  /** Upper case. */
  method: string;
  path: string;
  /** The query parameters sorted by name. */
  query: string;
  /** Name and value of each fingerprinted header, sorted by name. */
  headers: Array<[string, string]>;
  /** Lower case, '' when none. */
  mediaType: string;
  /** The body with its kind; a JSON body canonicalised (RFC 8785). */
  body: { kind: BodyKind; bytes: string | Uint8Array };
}

export function normalizeRequest(input: FingerprintInput): NormalizedRequest {
  return {
    method: input.method.toUpperCase(),
    path: input.path,
    query: normalizeQuery(input.querystring),
    headers: Object.keys(input.headers)
      .sort()
      .map((name) => [name, String(input.headers[name] ?? '')]),
    mediaType: (input.mediaType ?? '').toLowerCase(),
    body: input.body === undefined && input.rawBody !== undefined ? { kind: 'raw', bytes: input.rawBody } : bodyBytes(input.body),
  };
}

/**
 * The query parameters sorted by name, or the query as sent when it does not decode (an escape that is not
 * UTF-8, or a `%` that is no escape): URLSearchParams decodes an escape that is not UTF-8 to U+FFFD, so
 * `q=%E9` and `q=%E8` (a latin1 é and è, as an old client or a latin1 form sends them) would normalise
 * alike, though the handler may read them apart. An identical retry sends the same text, so it still matches.
 */
function normalizeQuery(querystring: string): string {
  if (querystring.includes('%') && !decodesAsUtf8(querystring)) return querystring;
  const query = new URLSearchParams(querystring);
  query.sort();
  return query.toString();
}

function decodesAsUtf8(text: string): boolean {
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}

export function fingerprint(input: FingerprintInput): string {
  return fingerprintOf(normalizeRequest(input));
}

export function fingerprintOf(request: NormalizedRequest): string {
  const { method, path, query, headers, mediaType, body } = request;
  // JSON.stringify escapes lone surrogates, and '\n' ends the head (see sha256Hex).
  const head = `${JSON.stringify([method, path, query, headers, mediaType, body.kind])}\n`;
  return sha256Hex(head, body.bytes);
}

/**
 * SHA-256 of `head` then `tail`, in hex, hashed in one shot (a Hash object per digest costs several times more):
 * the same digest as two updates, as long as `head` ends in a character that cannot pair with `tail`'s first
 * (its callers end it with '\n' or ':').
 */
export function sha256Hex(head: string, tail: string | Uint8Array): string {
  return hash('sha256', typeof tail === 'string' ? head + tail : Buffer.concat([Buffer.from(head), tail]));
}

function bodyBytes(body: unknown): NormalizedRequest['body'] {
  if (body === undefined || body === null) return { kind: 'none', bytes: '' };
  if (typeof body === 'string') return { kind: 'text', bytes: body };
  if (body instanceof Uint8Array) return { kind: 'bytes', bytes: body };
  try {
    return { kind: 'json', bytes: canonicalize(body) ?? '' };
  } catch (error) {
    throw new UnfingerprintableBodyError(`the JSON body cannot be canonicalised: ${(error as Error).message}`, { cause: error });
  }
}
