import type { Context } from 'koa';
import { FINGERPRINT_VERSION } from './fingerprint.js';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS } from './options.js';
import { sendProblem } from './problems.js';
import { replayResponse } from './response.js';
import type { IdempotencyRecord } from './store/types.js';
import { OUTCOME, type Outcome } from './telemetry/names.js';

/**
 * A fingerprint is compared only with one of its own algorithm version; a record written by another
 * version is trusted on its key alone, so upgrading the library never turns honest retries into 422s.
 */
export function isSameRequest(record: IdempotencyRecord, fingerprint: string): boolean {
  return record.fingerprintVersion !== FINGERPRINT_VERSION || record.fingerprint === fingerprint;
}

/** Answers a request whose key is held by an existing record: key reused (422), replay, not replayable or in progress (409). */
export function answerDuplicate(ctx: Context, record: IdempotencyRecord, fingerprint: string): Outcome {
  if (!isSameRequest(record, fingerprint)) {
    sendProblem(ctx, 'keyReused', {
      detail: 'This Idempotency-Key was first used with a different method, path or body. Use a new key for a new request.',
    });
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
