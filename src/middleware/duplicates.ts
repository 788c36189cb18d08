import type { Context } from 'koa';
import { FINGERPRINT_VERSION } from './fingerprint.js';
import { fingerprintHead, type Differences } from './fingerprint-parts.js';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS } from './options.js';
import { sendProblem } from './problems.js';
import { replayResponse } from './response.js';
import type { IdempotencyRecord } from '../store/types.js';
import { OUTCOME, type Outcome } from '../telemetry/names.js';

/**
 * A fingerprint is compared only with one of its own algorithm version; a record written by another
 * version is trusted on its key alone, so upgrading the library never turns honest retries into 422s.
 */
export function isSameRequest(record: IdempotencyRecord, fingerprint: string): boolean {
  // Only the fingerprint itself is compared, not the per-part digests stored after it (fingerprint-parts.ts).
  return record.fingerprintVersion !== FINGERPRINT_VERSION || fingerprintHead(record.fingerprint) === fingerprintHead(fingerprint);
}

/**
 * Answers a request whose key is held by an existing record: key reused (422), replay, not replayable or in
 * progress (409). `describeReuse` tells what differs from the record's request, for the 422's `differences`.
 */
export function answerDuplicate(ctx: Context, record: IdempotencyRecord, fingerprint: string, describeReuse?: (stored: string) => Differences | undefined): Outcome {
  if (!isSameRequest(record, fingerprint)) {
    answerKeyReused(ctx, describeReuse?.(record.fingerprint));
    return OUTCOME.KEY_REUSED;
  }
  if (record.status === 'completed') {
    if (record.response) {
      replayResponse(ctx, record.response);
      return OUTCOME.REPLAYED;
    }
    sendProblem(ctx, 'notReplayable', {
      detail:
        'The request was executed, but its response could not be stored (too large, streamed, or written around Koa). Fetch the resulting resource instead of retrying.',
    });
    return OUTCOME.NOT_REPLAYABLE;
  }
  return answerInProgress(ctx);
}

/**
 * The 422, with what differed when the record kept its per-part digests (a record written before they existed
 * answers without): the parts and JSON Pointers, never a value.
 */
function answerKeyReused(ctx: Context, found: Differences | undefined): void {
  const differing = found && [...found.parts.filter((part) => part !== 'body' || !found.members?.length), ...(found.members ?? [])];
  sendProblem(ctx, 'keyReused', {
    detail:
      differing && differing.length > 0
        ? `This Idempotency-Key was first used with a different request (it differs in: ${differing.join(', ')}). Use a new key for a new request.`
        : 'This Idempotency-Key was first used with a different method, path or body. Use a new key for a new request.',
    ...(found ? { extensions: { differences: found } } : {}),
  });
}

/**
 * 409 to a duplicate of a request still in progress, with Retry-After `DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS`
 * (1 s), whether a record with a lease is visible or not (the store's `busy` claim). Not the owner's remaining
 * lease: that is when a crashed owner's key may be taken over, not when a live owner is likely done (usually
 * well within it), and a client that honoured up to 30 s of it gave up on operations that completed moments
 * later. A retry of an in-progress key costs one read.
 */
export function answerInProgress(ctx: Context, retryAfterSeconds: number = DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS): Outcome {
  sendProblem(ctx, 'inProgress', {
    detail: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After delay.',
    retryAfterSeconds,
  });
  return OUTCOME.IN_PROGRESS;
}
