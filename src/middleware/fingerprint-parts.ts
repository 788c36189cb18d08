import canonicalize from 'canonicalize';
import { UnfingerprintableBodyError } from '../errors.js';
import { fingerprintOf, normalizeRequest, sha256Hex, type FingerprintInput, type NormalizedRequest } from './fingerprint.js';

/**
 * Per-part digests of a request, stored after its fingerprint, so that a `422 key-reused` can say *what*
 * differed (method, path, query, content type, a fingerprinted header, the body, and for a JSON body the JSON
 * Pointers of the members) without ever holding or sending a value: the IETF working group's issue 36.
 *
 * The stored fingerprint becomes `<v1 fingerprint> <parts as JSON>` (storedFingerprint). Only the first word is ever compared (the
 * middleware's isSameRequest, the claim's takeover condition), so a record written before the parts existed
 * still matches and, when it does not, answers a plain 422. Digests are 64-bit SHA-256 prefixes salted with the
 * scope and key: they cannot be compared across records, but anyone who reads the table could confirm a guessed
 * low-entropy value (an amount) for one record, as they could read the stored response beside it.
 */

/** JSON members are listed down to this depth; deeper ones count as the member that holds them. */
export const MAX_POINTER_DEPTH = 4;
/** At most this many members are kept per record (the depth shrinks until they fit), and reported per 422. */
export const MAX_POINTERS = 32;

export interface FingerprintParts {
  m: string;
  p: string;
  q: string;
  t: string;
  h: Record<string, string>;
  b: string;
  /** JSON bodies: the depth the members were listed at, and their digests by JSON Pointer. */
  j?: { d: number; m: Record<string, string> };
}

/** A part that differed, as the 422 names it. */
export type DifferingPart = 'method' | 'path' | 'query' | 'content-type' | `header:${string}` | 'body';

export interface Differences {
  parts: DifferingPart[];
  /** JSON Pointers of the body members that differ (added, removed or changed), at most MAX_POINTERS. */
  members?: string[];
}

/** The stored form of a request's fingerprint: its v1 fingerprint, a space, its parts (stored-fingerprint.ts reads the head). */
export function storedFingerprint(input: FingerprintInput, salt: string): string {
  const request = normalizeRequest(input);
  return `${fingerprintOf(request)} ${JSON.stringify(fingerprintParts(input, salt, request))}`;
}

export function fingerprintParts(input: FingerprintInput, salt: string, request = normalizeRequest(input)): FingerprintParts {
  try {
    return partsOf(input, request, salt);
  } catch (error) {
    // The fingerprint's own canonicalisation can just fit the stack where this deeper walk does not (a body
    // nested thousands deep): the same refusal, 400 body-invalid, never a 500.
    throw new UnfingerprintableBodyError(`the JSON body cannot be canonicalised: ${(error as Error).message}`, { cause: error });
  }
}

function partsOf(input: FingerprintInput, request: NormalizedRequest, salt: string): FingerprintParts {
  const digest = digester(salt);
  const headers: Record<string, string> = {};
  for (const [name, value] of request.headers) headers[name] = digest(value);
  const parts: FingerprintParts = {
    m: digest(request.method),
    p: digest(request.path),
    q: digest(request.query),
    t: digest(request.mediaType),
    h: headers,
    b: bodyDigest(input, request, salt),
  };
  const members = jsonMembers(input, digest);
  if (members) parts.j = members;
  return parts;
}

/**
 * What differs between a stored fingerprint and the request at hand, or undefined when the stored one has no
 * parts (written before they existed) or they cannot be read. The request's members are listed again at the
 * depth the stored ones were, so the two lists compare pointer for pointer.
 */
export function differences(stored: string, input: FingerprintInput, salt: string): Differences | undefined {
  const space = stored.indexOf(' ');
  if (space === -1) return undefined;
  let before: FingerprintParts;
  try {
    before = JSON.parse(stored.slice(space + 1)) as FingerprintParts;
  } catch {
    return undefined;
  }
  const digest = digester(salt);
  const now = fingerprintParts(input, salt);
  const parts: DifferingPart[] = [];
  if (before.m !== now.m) parts.push('method');
  if (before.p !== now.p) parts.push('path');
  if (before.q !== now.q) parts.push('query');
  if (before.t !== now.t) parts.push('content-type');
  for (const name of new Set([...Object.keys(before.h ?? {}), ...Object.keys(now.h)])) {
    if (before.h?.[name] !== now.h[name]) parts.push(`header:${name}`);
  }
  if (before.b === now.b) return { parts };
  parts.push('body');
  const beforeMembers = before.j;
  // A retry with more members than the stored ones and MAX_POINTERS more differs in more than MAX_POINTERS.
  const nowMembers = beforeMembers && membersAt(input, beforeMembers.d, digest, Object.keys(beforeMembers.m).length + MAX_POINTERS);
  if (!beforeMembers || !nowMembers) return { parts };
  const members = [...new Set([...Object.keys(beforeMembers.m), ...Object.keys(nowMembers)])]
    .filter((pointer) => beforeMembers.m[pointer] !== nowMembers[pointer])
    .sort();
  // Named by `body` alone: a change wider than the list may hold (never a list cut short), or one no member shows
  // (an object turned into an array with the same members, `{"0": 1}` and `[1]`).
  return members.length === 0 || members.length > MAX_POINTERS ? { parts } : { parts, members };
}

type Digest = (text: string | Uint8Array) => string;

function digester(salt: string): Digest {
  const head = `${salt}\n`;
  return (text) => sha256Hex(head, text).slice(0, 16);
}

/**
 * The digest of the body as the fingerprint hashes it, after its kind (`json:`, `text:`, `bytes:`…), so bodies of
 * two kinds with the same bytes differ (a parsed JSON string is of kind `text`: the content type tells it from a
 * text body). A JSON `null` that came with its raw bytes is no body to the fingerprint, and its raw bytes here, as
 * this digest has always taken them: stored digests still compare.
 */
function bodyDigest(input: FingerprintInput, request: NormalizedRequest, salt: string): string {
  const body = input.body === null && input.rawBody !== undefined ? { kind: 'raw', bytes: input.rawBody } : request.body;
  return sha256Hex(`${salt}\n${body.kind}:`, body.bytes).slice(0, 16);
}

/** The members of a JSON object or array body, at the deepest depth up to MAX_POINTER_DEPTH whose list fits MAX_POINTERS. */
function jsonMembers(input: FingerprintInput, digest: Digest): FingerprintParts['j'] {
  for (let depth = MAX_POINTER_DEPTH; depth >= 1; depth--) {
    const members = membersAt(input, depth, digest, MAX_POINTERS);
    if (members) return { d: depth, m: members };
  }
  return undefined;
}

/** Digests by JSON Pointer (RFC 6901) down to `depth`; undefined for a body that is no JSON container, or past `limit`. */
function membersAt(input: FingerprintInput, depth: number, digest: Digest, limit = Infinity): Record<string, string> | undefined {
  const body = input.body;
  if (!isContainer(body)) return undefined;
  const members: Record<string, string> = {};
  let count = 0;
  const visit = (value: unknown, pointer: string, level: number): boolean => {
    if (level > 0 && (level === depth || !isContainer(value) || isEmpty(value))) {
      if (++count > limit) return false;
      members[pointer] = digest(canonicalize(value) ?? '');
      return true;
    }
    for (const [name, child] of Object.entries(value as object)) {
      if (!visit(child, `${pointer}/${name.replaceAll('~', '~0').replaceAll('/', '~1')}`, level + 1)) return false;
    }
    return true;
  };
  return visit(body, '', 0) ? members : undefined;
}

function isContainer(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !(value instanceof Uint8Array);
}

function isEmpty(value: object): boolean {
  return Object.keys(value).length === 0;
}
