import type { Context } from 'koa';
import { FINGERPRINT_VERSION } from './fingerprint.js';
import { DEFAULT_BUSY_RETRY_AFTER_SECONDS } from './options.js';
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
      detail: 'The request was executed, but its response could not be stored (too large, streamed, or written around Koa). Fetch the resulting resource instead of retrying.',
    });
    return OUTCOME.NOT_REPLAYABLE;
  }
  answerInProgress(ctx, record.leaseRemainingMs / 1000);
  return OUTCOME.CONFLICT;
}

/**
 * 409 with Retry-After: the remaining lease of the record in the way, or, when none is visible (a busy
 * transactional claim: the holder has not committed its record yet), `DEFAULT_BUSY_RETRY_AFTER_SECONDS`.
 */
export function answerInProgress(ctx: Context, retryAfterSeconds: number = DEFAULT_BUSY_RETRY_AFTER_SECONDS): void {
  sendProblem(ctx, 'inProgress', {
    detail: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After delay.',
    retryAfterSeconds,
  });
}
