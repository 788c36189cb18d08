import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';

/**
 * The request fingerprint: what makes a retry "the same request". Pure, no I/O.
 *
 * Version 1 hashes (SHA-256) the method, the path, the query parameters sorted by name, the allow-listed
 * headers (lower-cased names, sorted) and the body. A JSON body is canonicalised with RFC 8785 (JCS), so
 * key order and white space do not matter; a string or byte body is hashed as sent. The version is stored
 * with each record: a later algorithm compares only fingerprints of its own version.
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
}

/** Thrown when a body cannot be canonicalised (NaN, lone surrogates, cycles, nesting deeper than the stack). */
export class UnfingerprintableBodyError extends Error {
  override name = 'UnfingerprintableBodyError';
}

export function fingerprint(input: FingerprintInput): string {
  const query = new URLSearchParams(input.querystring);
  query.sort();
  const headers = Object.keys(input.headers)
    .sort()
    .map((name) => [name, String(input.headers[name] ?? '')]);
  const hash = createHash('sha256');
  hash.update(JSON.stringify([input.method.toUpperCase(), input.path, query.toString(), headers]));
  hash.update('\n');
  hash.update(bodyBytes(input.body));
  return hash.digest('hex');
}

function bodyBytes(body: unknown): string | Uint8Array {
  if (body === undefined || body === null) return '';
  if (typeof body === 'string' || body instanceof Uint8Array) return body;
  try {
    return canonicalize(body) ?? '';
  } catch (error) {
    throw new UnfingerprintableBodyError(`the JSON body cannot be canonicalised: ${(error as Error).message}`, { cause: error });
  }
}
