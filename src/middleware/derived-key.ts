import { createHash } from 'node:crypto';

/**
 * The idempotency key of a downstream call made while serving a request (`ctx.idempotency.deriveKey(label)`):
 * the same on every retry of that request, so the downstream service deduplicates the call too, and
 * different per label, so two calls of one request never share a key. A one-way hash: neither the scope nor
 * the request's key can be read back from it.
 */
export function deriveKey(scope: string, key: string, label: string): string {
  return createHash('sha256').update(`derived\n${scope.length}:${scope}\n${key.length}:${key}\n${label}`).digest('hex');
}
