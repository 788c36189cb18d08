import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import type { StoredResponse } from '../store/types.js';
import type { ClaimRequest, ClaimResult, IdempotencyRecord, IdempotencyStore, TransactionalClaim } from '../store/types.js';

/**
 * What every case builds on: requests on keys and scopes nobody else uses, sample responses, and
 * assertions that narrow a claim's result or fail with a message naming what was expected.
 */

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Milliseconds since `startMs` (a `performance.now()` reading). */
export const since = (startMs: number): number => performance.now() - startMs;

/** A request on a fresh scope and key, leased for 30 s and kept for an hour unless overridden. */
export function newRequest(overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  const id = randomUUID();
  return {
    scope: `conformance-${id.slice(0, 8)}`,
    key: `key-${id}`,
    fingerprint: 'fingerprint-a',
    fingerprintVersion: 1,
    leaseMs: 30_000,
    ttlSeconds: 3_600,
    correlationId: `correlation-${id}`,
    traceparent: newTraceparent(),
    ...overrides,
  };
}

/** A W3C traceparent: the record keeps the executing request's, so that replays can link to its span. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
}

/** A response with a multi-valued header and body bytes that are not valid UTF-8: stored and replayed exactly. */
export function sampleResponse(): StoredResponse {
  return {
    status: 201,
    headers: { 'content-type': 'application/octet-stream', link: ['</a>; rel="first"', '</b>; rel="second"'], 'x-request-id': randomUUID() },
    body: Buffer.concat([Buffer.from('{"id":"ch_1"}'), Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a])]),
  };
}

/** The result, which must be a claim. */
export function claimedOf<R extends ClaimResult | TransactionalClaim>(result: R, what: string): Extract<R, { kind: 'claimed' }> {
  assert.equal(result.kind, 'claimed', `${what}: expected the claim to be 'claimed', got '${result.kind}'`);
  return result as Extract<R, { kind: 'claimed' }>;
}

/** The record of a result that must be `existing`. */
export function existingOf(result: ClaimResult | TransactionalClaim, what: string): IdempotencyRecord {
  assert.equal(result.kind, 'existing', `${what}: expected the claim to be 'existing', got '${result.kind}'`);
  return result.record;
}

/** The stored response of a completed record equals what was completed: status, headers and the body's bytes. */
export function assertReplays(record: IdempotencyRecord, expected: StoredResponse, what: string): void {
  assert.equal(record.status, 'completed', `${what}: the record's status`);
  assert.equal(record.replayable, true, `${what}: a replayable completion gives replayable: true`);
  assert.ok(record.response, `${what}: a replayable completion gives a response`);
  assert.equal(record.response.status, expected.status, `${what}: the response's status`);
  assert.deepEqual(record.response.headers, expected.headers, `${what}: the response's headers`);
  if (expected.body === null) {
    assert.equal(record.response.body, null, `${what}: a response without a body replays a null body`);
    return;
  }
  assert.ok(Buffer.isBuffer(record.response.body), `${what}: the body is a Buffer (Koa sends a Buffer as bytes)`);
  assert.ok(record.response.body.equals(expected.body), `${what}: the body's bytes`);
}

/** The claim of the key again, with the request's own fingerprint unless overridden. */
export function again(store: IdempotencyStore, request: ClaimRequest, overrides: Partial<ClaimRequest> = {}): Promise<ClaimResult> {
  return store.claim({ ...request, correlationId: `retry-${randomUUID()}`, traceparent: newTraceparent(), ...overrides });
}
