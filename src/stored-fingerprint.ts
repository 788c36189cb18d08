/**
 * The stored form of a request's fingerprint: the fingerprint itself, then (after a space) the per-part
 * digests that let a 422 say what differed (middleware/fingerprint-parts.ts). The middleware writes it;
 * the middleware's duplicate check and the CLI's `inspect` read its head.
 */

/** The v1 fingerprint of a stored one, with or without parts: what identifies the request. */
export function fingerprintHead(stored: string): string {
  const space = stored.indexOf(' ');
  return space === -1 ? stored : stored.slice(0, space);
}
