import { createHash, randomBytes, randomUUID } from 'node:crypto';

/**
 * The `instance` of a problem (RFC 9457 section 3.1.5): a URI naming this one occurrence, so a support
 * engineer handed a client's error finds that very request (a Jaeger tag search on
 * `idempotency.problem.instance`). Peers send `urn:uuid:`; so do we.
 *
 * A problem answered on a key that was read gets a version 8 UUID (RFC 9562 section 5.8) whose first 48 bits
 * are a tag of the request's correlation ID, the rest random: `koa-idempotency inspect --instance` finds the
 * record from the occurrence ID alone, with no write on the answer's path. The tag is a hash of the
 * correlation ID (itself a one-way hash of scope and key), so it reveals neither; it only says that two
 * occurrences concern the same key, which their client knows already. Any other problem gets a random
 * version 4 UUID.
 */

const TAG_BYTES = 6;
const URN_PREFIX = 'urn:uuid:';
const UUID_V8 = /^urn:uuid:([0-9a-f]{8})-([0-9a-f]{4})-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** A fresh occurrence ID; tagged with `correlationId` when the problem concerns a key. */
export function newProblemInstance(correlationId?: string): string {
  if (correlationId === undefined) return URN_PREFIX + randomUUID();
  const bytes = Buffer.concat([Buffer.from(correlationTag(correlationId), 'hex'), randomBytes(16 - TAG_BYTES)]);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80; // version 8
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // variant 10 (RFC 9562)
  const hex = bytes.toString('hex');
  return `${URN_PREFIX}${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The 48-bit tag (12 hex digits) of a correlation ID: the first bytes of its SHA-256, as the store computes it too. */
export function correlationTag(correlationId: string): string {
  return createHash('sha256')
    .update(correlationId, 'utf8')
    .digest('hex')
    .slice(0, TAG_BYTES * 2);
}

/** The correlation tag an occurrence ID carries, or undefined for one that carries none (a version 4 UUID, any other text). */
export function correlationTagOf(instance: string): string | undefined {
  const match = UUID_V8.exec(instance.trim());
  return match ? `${match[1]}${match[2]}`.toLowerCase() : undefined;
}
