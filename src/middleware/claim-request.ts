import type { Context } from 'koa';
import { UnfingerprintableBodyError } from '../errors.js';
import { callAsyncHook } from '../hooks.js';
import type { KeyReading } from '../key.js';
import { fingerprintHead } from '../stored-fingerprint.js';
import type { ClaimRequest, IdempotencyRecord } from '../store/types.js';
import { FINGERPRINT_VERSION } from './fingerprint.js';
import { differences, storedFingerprint, type Differences } from './fingerprint-parts.js';
import type { ResolvedOptions } from './resolved-options.js';
import { readFingerprintInput, scopeString } from './request-identity.js';

/**
 * A request refused before any claim, for the caller to answer (answers.ts): a missing or invalid key or a
 * body that cannot be fingerprinted (the client's to fix: 400 or 415, counted as `invalid_key`), or a `scope`
 * function that failed (the server's fault: 500 request-failed, reported through diag and the app's 'error' event).
 */
export type Rejection =
  | { kind: 'keyMissing' }
  | { kind: 'keyInvalid'; reason: string }
  | { kind: 'bodyNotRead'; mediaType: string }
  | { kind: 'bodyInvalid'; reason: string }
  | { kind: 'scopeFailed'; error: unknown };

/** A keyed request ready to claim, and how it differs from the request of a record that holds its key (its 422). */
export interface KeyedRequest {
  kind: 'request';
  request: ClaimRequest;
  describeReuse: (stored: string) => Differences | undefined;
}

export function keyRejection(reading: Exclude<KeyReading, { kind: 'valid' }>): Rejection {
  return reading.kind === 'absent' ? { kind: 'keyMissing' } : { kind: 'keyInvalid', reason: reading.reason };
}

/** The claim request of a keyed request (scope and fingerprint), or the rejection the caller answers. */
export async function readClaimRequest(ctx: Context, config: ResolvedOptions, key: string): Promise<KeyedRequest | Rejection> {
  const reading = readFingerprintInput(ctx, config.fingerprintHeaders);
  if (reading.kind === 'unread') return { kind: 'bodyNotRead', mediaType: ctx.request.type };
  const scope = await callAsyncHook('scope', async () => scopeString(await config.scope(ctx)), 'the request is answered 500 request-failed');
  if (!scope.ok) return { kind: 'scopeFailed', error: scope.error };
  try {
    const { input } = reading;
    const salt = `${scope.value.length}:${scope.value}\n${key}`;
    const request = {
      scope: scope.value,
      key,
      fingerprint: storedFingerprint(input, salt),
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: config.leaseMs,
      ttlSeconds: config.ttlSeconds,
    };
    return { kind: 'request', request, describeReuse: (stored) => differences(stored, input, salt) };
  } catch (error) {
    if (!(error instanceof UnfingerprintableBodyError)) throw error;
    return { kind: 'bodyInvalid', reason: error.message };
  }
}

/**
 * A fingerprint is compared only with one of its own algorithm version; a record written by another
 * version is trusted on its key alone, so upgrading the library never turns honest retries into 422s.
 */
export function isSameRequest(record: IdempotencyRecord, fingerprint: string): boolean {
  // Only the fingerprint itself is compared, not the per-part digests stored after it (fingerprint-parts.ts).
  return record.fingerprintVersion !== FINGERPRINT_VERSION || fingerprintHead(record.fingerprint) === fingerprintHead(fingerprint);
}
