import type { Context } from 'koa';
import type { HandlerOutcome } from './handler-outcome.js';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS, type ResolvedOptions } from './options.js';
import { answerRequestFailed, sendProblem } from './problems.js';
import { CompletionRolledBackError } from '../store/completion-rolled-back.js';
import { OPERATION, OUTCOME, type Outcome } from '../telemetry/names.js';
import type { RequestTelemetry } from './request-telemetry.js';

/**
 * Answers to a request whose handler ran but whose response was not stored. Each tells the client what
 * is known: nothing was kept for the key (500 or 503, retry runs again), or the outcome is unknown (503,
 * the retry finds out).
 */

/** The caller has released (or rolled back) the key; answers 500 when the response could not be captured. */
export function answerNotStored(ctx: Context, outcome: Exclude<HandlerOutcome, { kind: 'store' }>): Outcome {
  if (outcome.kind === 'failed') {
    answerRequestFailed(
      ctx,
      outcome.error,
      'The response could not be stored. Nothing was kept for this Idempotency-Key: a retry with the same key runs the request again.',
    );
  }
  return OUTCOME.RELEASED;
}

/** A transactional completion failed: known rolled back (before COMMIT, or by Postgres at COMMIT), or a COMMIT failed or lost. */
export function answerCommitFailed(ctx: Context, config: ResolvedOptions, telemetry: RequestTelemetry, error: unknown): Outcome {
  telemetry.storeFailure(error instanceof CompletionRolledBackError ? error.cause : error, OPERATION.COMMIT);
  if (!(error instanceof CompletionRolledBackError)) {
    // The operation may or may not have happened: the retry finds out safely (a replay if it committed).
    sendProblem(ctx, 'storeUnavailable', {
      detail:
        'The outcome could not be confirmed. Retry with the same Idempotency-Key: the stored response is replayed if the operation committed, or it runs if it did not.',
      retryAfterSeconds: config.storeRetryAfterSeconds,
    });
    return OUTCOME.STORE_UNAVAILABLE;
  }
  if (error.transactionAborted) {
    answerRequestFailed(
      ctx,
      error.cause,
      'A statement failed inside the transaction of this request and was not rolled back to a savepoint, so nothing was committed. A retry with the same Idempotency-Key runs the request again.',
    );
    return OUTCOME.RELEASED;
  }
  if (error.constraintViolated) {
    answerRequestFailed(
      ctx,
      error.cause,
      'A constraint checked when the transaction of this request committed (a deferred constraint) failed, so Postgres rolled it back and nothing was committed. A retry with the same Idempotency-Key runs the request again.',
    );
    return OUTCOME.RELEASED;
  }
  if (error.atCommit && !error.conflicted) {
    answerRequestFailed(
      ctx,
      error.cause,
      'Postgres refused to commit the transaction of this request (a deferred constraint trigger or check failed), so it rolled it back and nothing was committed. A retry with the same Idempotency-Key runs the request again.',
    );
    return OUTCOME.RELEASED;
  }
  sendProblem(ctx, 'storeUnavailable', {
    detail: error.atCommit
      ? 'Postgres could not commit the transaction of this request (a serialization failure or a deadlock) and rolled it back, so nothing was committed. Retry later with the same Idempotency-Key: the request runs again.'
      : 'The response could not be stored, so nothing was committed. Retry later with the same Idempotency-Key: the request runs again.',
    retryAfterSeconds: config.storeRetryAfterSeconds,
  });
  return OUTCOME.STORE_UNAVAILABLE;
}

/**
 * The lease ran out while the handler ran and another attempt took the key over: its response, not this one,
 * is the key's. Sending this one would tell the client of an outcome that no retry will ever replay, so the
 * client is told to ask again and gets the stored one.
 */
export function answerLostLease(ctx: Context, config: ResolvedOptions): Outcome {
  sendProblem(ctx, 'storeUnavailable', {
    detail: `This attempt ran past its lease and another attempt took the ${config.headerName} over, so its result was not stored. Retry with the same ${config.headerName} to get the outcome stored for it.`,
    retryAfterSeconds: DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS,
  });
  return OUTCOME.STORE_UNAVAILABLE;
}
