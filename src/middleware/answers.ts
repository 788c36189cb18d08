import type { Context } from 'koa';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS } from '../protocol.js';
import { CompletionRolledBackError } from '../store/completion-rolled-back.js';
import type { IdempotencyRecord } from '../store/types.js';
import { OUTCOME, type Outcome } from '../telemetry/names.js';
import { isSameRequest, type Rejection } from './claim-request.js';
import type { Differences } from './fingerprint-parts.js';
import type { HandlerOutcome } from './handler-outcome.js';
import type { ResolvedOptions } from './resolved-options.js';
import { sendProblem } from './problems.js';
import { markReplayAliases, replayResponse } from './response.js';

/**
 * Every answer the middleware writes itself, and its text: the refusals before a claim, the answers to a
 * duplicate (replay, 409, 422), and the answers to a request whose response was not stored. Each returns the
 * request's outcome. The caller records the telemetry; this file only writes responses.
 */

type AnswerOptions = Pick<ResolvedOptions, 'headerName' | 'storeRetryAfterSeconds'>;

/** A request refused before any claim: the client's to fix (400 or 415), or a failed `scope` function (500). */
export function answerRejection(ctx: Context, config: AnswerOptions, rejection: Rejection): void {
  switch (rejection.kind) {
    case 'keyMissing':
      return sendProblem(ctx, 'keyMissing', {
        detail: `This endpoint requires an ${config.headerName} header (a unique value per operation, reused on retries).`,
      });
    case 'keyInvalid':
      return sendProblem(ctx, 'keyInvalid', { detail: `The ${config.headerName} header is invalid: ${rejection.reason}.` });
    case 'bodyNotRead':
      return sendProblem(ctx, 'bodyNotRead', {
        detail: `This endpoint does not read a ${rejection.mediaType || 'request'} body before checking the ${config.headerName}, so a retry could not be told apart from a different request. Send the body in a media type the endpoint parses.`,
      });
    case 'bodyInvalid':
      return sendProblem(ctx, 'bodyInvalid', { detail: rejection.reason });
    case 'scopeFailed':
      return answerRequestFailed(
        ctx,
        rejection.error,
        'The idempotency scope function of this endpoint failed, so the request was not processed and nothing was stored for its Idempotency-Key. This is a fault of the server, not of the request.',
      );
  }
}

/**
 * Answers a request whose key is held by an existing record: key reused (422), replay, not replayable or in
 * progress (409). `describeReuse` tells what differs from the record's request, for the 422's `differences`.
 */
export function answerDuplicate(
  ctx: Context,
  record: IdempotencyRecord,
  fingerprint: string,
  describeReuse: (stored: string) => Differences | undefined,
  config: Pick<ResolvedOptions, 'replayedHeaderAliases' | 'excludeHeaders'>,
): Outcome {
  if (!isSameRequest(record, fingerprint)) return answerKeyReused(ctx, describeReuse(record.fingerprint));
  if (record.status !== 'completed') return answerInProgress(ctx);
  if (!record.response) {
    sendProblem(ctx, 'notReplayable', {
      detail:
        'The request was executed, but its response could not be stored (too large, streamed, or written around Koa). Fetch the resulting resource instead of retrying.',
    });
    return OUTCOME.NOT_REPLAYABLE;
  }
  replayResponse(ctx, record.response, config.excludeHeaders);
  markReplayAliases(ctx, config.replayedHeaderAliases);
  return OUTCOME.REPLAYED;
}

/**
 * The 422, with what differed when the record kept its per-part digests (a record written before they existed
 * answers without): the parts and JSON Pointers, never a value.
 */
function answerKeyReused(ctx: Context, found: Differences | undefined): Outcome {
  const differing = found && [...found.parts.filter((part) => part !== 'body' || !found.members?.length), ...(found.members ?? [])];
  sendProblem(ctx, 'keyReused', {
    detail:
      differing && differing.length > 0
        ? `This Idempotency-Key was first used with a different request (it differs in: ${differing.join(', ')}). Use a new key for a new request.`
        : 'This Idempotency-Key was first used with a different method, path or body. Use a new key for a new request.',
    ...(found ? { extensions: { differences: found } } : {}),
  });
  return OUTCOME.KEY_REUSED;
}

/**
 * 409 to a duplicate of a request still in progress, with Retry-After `DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS`
 * (1 s), whether a record with a lease is visible or not (the store's `busy` claim). Not the owner's remaining
 * lease: that is when a crashed owner's key may be taken over, not when a live owner is likely done (usually
 * well within it), and a client that honoured up to 30 s of it gave up on operations that completed moments
 * later. A retry of an in-progress key costs one read.
 */
export function answerInProgress(ctx: Context): Outcome {
  sendProblem(ctx, 'inProgress', {
    detail: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After delay.',
    retryAfterSeconds: DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS,
  });
  return OUTCOME.IN_PROGRESS;
}

/**
 * Why a request is answered `503 store-unavailable`: each tells the client what is known. Nothing ran or
 * nothing was kept (a retry runs the request), or the outcome is unknown (a retry finds out).
 */
export type StoreUnavailableReason =
  /** The claim failed: the handler never ran. */
  | 'unreachable'
  /** A transactional COMMIT failed or was lost: it may or may not have committed. */
  | 'outcomeUnknown'
  /** Postgres rolled the COMMIT back (a serialization failure or a deadlock). */
  | 'rolledBackAtCommit'
  /** The completion failed before COMMIT and was rolled back. */
  | 'notStored'
  /** Lease mode: the lease ran out and another attempt took the key over (see answerCompletionFailed). */
  | 'lostLease';

function storeUnavailableDetail(reason: StoreUnavailableReason, headerName: string): string {
  switch (reason) {
    case 'unreachable':
      return 'The idempotency store could not be reached, so the request was not processed. Retry later with the same Idempotency-Key.';
    case 'outcomeUnknown':
      return 'The outcome could not be confirmed. Retry with the same Idempotency-Key: the stored response is replayed if the operation committed, or it runs if it did not.';
    case 'rolledBackAtCommit':
      return 'Postgres could not commit the transaction of this request (a serialization failure or a deadlock) and rolled it back, so nothing was committed. Retry later with the same Idempotency-Key: the request runs again.';
    case 'notStored':
      return 'The response could not be stored, so nothing was committed. Retry later with the same Idempotency-Key: the request runs again.';
    case 'lostLease':
      return `This attempt ran past its lease and another attempt took the ${headerName} over, so its result was not stored. Retry with the same ${headerName} to get the outcome stored for it.`;
  }
}

/** The one `503 store-unavailable` answer; a lost lease's retry soon finds the other attempt's outcome, so it waits less. */
export function answerStoreUnavailable(ctx: Context, config: AnswerOptions, reason: StoreUnavailableReason): Outcome {
  sendProblem(ctx, 'storeUnavailable', {
    detail: storeUnavailableDetail(reason, config.headerName),
    retryAfterSeconds: reason === 'lostLease' ? DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS : config.storeRetryAfterSeconds,
  });
  return OUTCOME.STORE_UNAVAILABLE;
}

/** The claim was given back (released or rolled back); answers 500 when the response could not be captured. */
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

/**
 * A completion that failed (claim.ts): in lease mode a lost lease (`'lostLease'`); in transactional mode the
 * commit's error, known rolled back (before COMMIT, or by Postgres at COMMIT) or a COMMIT failed or lost.
 */
export function answerCompletionFailed(ctx: Context, config: AnswerOptions, failure: 'lostLease' | { error: unknown }): Outcome {
  if (failure === 'lostLease') return answerStoreUnavailable(ctx, config, 'lostLease');
  const { error } = failure;
  // The operation may or may not have happened: the retry finds out safely (a replay if it committed).
  if (!(error instanceof CompletionRolledBackError)) return answerStoreUnavailable(ctx, config, 'outcomeUnknown');
  const detail = rolledBackDetail(error);
  if (detail === undefined) return answerStoreUnavailable(ctx, config, error.atCommit ? 'rolledBackAtCommit' : 'notStored');
  answerRequestFailed(ctx, error.cause, detail);
  return OUTCOME.RELEASED;
}

/** The 500 text of a rollback that is the application's fault (the same retry meets it again), else undefined. */
function rolledBackDetail(error: CompletionRolledBackError): string | undefined {
  if (error.transactionAborted) {
    return 'A statement failed inside the transaction of this request and was not rolled back to a savepoint, so nothing was committed. A retry with the same Idempotency-Key runs the request again.';
  }
  if (error.constraintViolated) {
    return 'A constraint checked when the transaction of this request committed (a deferred constraint) failed, so Postgres rolled it back and nothing was committed. A retry with the same Idempotency-Key runs the request again.';
  }
  if (error.atCommit && !error.conflicted) {
    return 'Postgres refused to commit the transaction of this request (a deferred constraint trigger or check failed), so it rolled it back and nothing was committed. A retry with the same Idempotency-Key runs the request again.';
  }
  return undefined;
}

/**
 * `500 request-failed`: a fault of the application (one of its hooks, its response, or its use of the
 * transaction), answered with nothing stored for the key. The error goes to the app's 'error' event, where
 * Koa apps log errors, since it no longer reaches the app's error handling.
 */
function answerRequestFailed(ctx: Context, error: unknown, detail: string): void {
  if (ctx.app.listenerCount('error') > 0) ctx.app.emit('error', error instanceof Error ? error : new Error(String(error)), ctx);
  sendProblem(ctx, 'requestFailed', { detail });
}
