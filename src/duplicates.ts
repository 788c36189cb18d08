import type { Context } from 'koa';
import { FINGERPRINT_VERSION } from './fingerprint.js';
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

/** Answers a request whose key is held by an existing record (mismatch, replay or conflict). */
export function answerDuplicate(ctx: Context, record: IdempotencyRecord, fingerprint: string): Outcome {
  if (!isSameRequest(record, fingerprint)) {
    sendProblem(ctx, 'keyReused', {
      detail: 'This Idempotency-Key was first used with a different method, path or body. Use a new key for a new request.',
    });
    return OUTCOME.MISMATCH;
  }
  if (record.status === 'completed') {
    if (record.response) {
      replayResponse(ctx, record.response);
      return OUTCOME.REPLAYED;
    }
    sendProblem(ctx, 'notReplayable', {
      detail: 'The request was executed, but its response was too large or streamed to be stored. Fetch the resulting resource instead of retrying.',
    });
    return OUTCOME.NOT_REPLAYABLE;
  }
  answerInProgress(ctx, record.leaseRemainingMs / 1000);
  return OUTCOME.CONFLICT;
}

export function answerInProgress(ctx: Context, retryAfterSeconds: number): void {
  sendProblem(ctx, 'inProgress', {
    detail: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After delay.',
    retryAfterSeconds,
  });
}
