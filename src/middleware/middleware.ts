import { context, diag } from '@opentelemetry/api';
import type { Context, Middleware, Next } from 'koa';
import { settleClaim } from './claim-settling.js';
import { answerCommitFailed, answerLostLease, answerNotStored } from './completion-failures.js';
import { createIdempotencyContext } from './context.js';
import { answerDuplicate, answerInProgress } from './duplicates.js';
import { FencedError } from '../errors.js';
import { fingerprint, FINGERPRINT_VERSION, UnfingerprintableBodyError } from './fingerprint.js';
import { differences, fingerprintParts, withParts, type Differences } from './fingerprint-parts.js';
import { runDownstream, type HandlerOutcome } from './handler-outcome.js';
import { callAsyncHook } from '../hooks.js';
import { readKey, type KeyReading } from '../key.js';
import { completeLeased, keepLeaseAlive } from './lease.js';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS, resolveOptions, type IdempotencyOptions, type ResolvedOptions } from './options.js';
import { answerRequestFailed, noteProblemSubject, sendProblem, type ProblemName } from './problems.js';
import { readFingerprintInput, scopeString } from './request-identity.js';
import { markReplayAliases } from './response.js';
import type { ClaimRequest, IdempotencyRecord, Lease } from '../store/types.js';
import { countRejectedKey } from '../telemetry/metrics.js';
import { MODE, OPERATION, OUTCOME, type Operation, type Outcome } from '../telemetry/names.js';
import { RequestTelemetry } from './request-telemetry.js';
import { withoutInboundCorrelationId } from '../telemetry/correlation.js';

/**
 * The Koa middleware. Per request: read the key, claim it, then either run the handler and store its
 * response, or answer from the record that holds the key (replay, 409, 422). The store owns atomicity;
 * this file owns the lifecycle and holds no SQL.
 */
export function idempotency(options: IdempotencyOptions): Middleware {
  const config = resolveOptions(options);
  const header = config.headerName.toLowerCase();
  const mode = config.transactional ? MODE.TRANSACTIONAL : MODE.LEASE;
  const run = config.transactional ? runTransactional : runLeased;

  return async function idempotencyMiddleware(ctx: Context, next: Next): Promise<void> {
    const reading = config.methods.has(ctx.method) ? readKey(ctx.req.headers[header], config) : undefined;
    if (reading === undefined || (reading.kind === 'absent' && !config.required(ctx))) {
      // Not ours: a method the middleware does not apply to, or no key where none is required.
      await (config.telemetry.trustInboundCorrelationId ? next() : nextWithoutInboundCorrelationId(next));
      return;
    }

    if (reading.kind === 'valid' && config.includeKeyInProblems) noteProblemSubject(ctx, { key: reading.key });
    const claim = reading.kind === 'valid' ? await readClaimRequest(ctx, config, reading.key) : keyRejection(reading, config);
    if (claim.kind !== 'request') return answerRejection(ctx, config, claim);
    const { request } = claim;
    const telemetry = new RequestTelemetry(request.scope, request.key, { route: config.routeName(ctx), method: ctx.method, mode }, config.telemetry);
    request.correlationId = telemetry.correlationId;
    request.traceparent = telemetry.traceparent();
    noteProblemSubject(ctx, { correlationId: telemetry.correlationId });
    await telemetry.run(async () => {
      // A handler that throws has had its claim released (or rolled back) before the error propagates.
      let outcome: Outcome = OUTCOME.RELEASED;
      try {
        outcome = await run(ctx, next, request, config, telemetry);
      } finally {
        telemetry.finish(outcome);
      }
    });
  };
}

/** Runs the rest of an unkeyed request without the caller's correlation ID in the baggage it forwards. */
function nextWithoutInboundCorrelationId(next: Next): Promise<unknown> {
  const active = context.active();
  const cleaned = withoutInboundCorrelationId(active);
  return cleaned === active ? next() : context.with(cleaned, next);
}

/**
 * A request refused before any claim, for the caller to answer: a missing or invalid key or a body that
 * cannot be fingerprinted (the client's to fix: 400 or 415, counted as `invalid_key`), or a `scope` function
 * that failed (the server's fault: 500 request-failed, reported through diag and the app's 'error' event).
 */
type Rejection =
  | { kind: 'rejected'; problem: Extract<ProblemName, 'keyMissing' | 'keyInvalid' | 'bodyNotRead' | 'bodyInvalid'>; detail: string }
  | { kind: 'scopeFailed'; error: unknown };

type ClaimRequestReading = { kind: 'request'; request: ClaimRequest } | Rejection;

function keyRejection(reading: Exclude<KeyReading, { kind: 'valid' }>, config: ResolvedOptions): Rejection {
  if (reading.kind === 'absent') {
    return {
      kind: 'rejected',
      problem: 'keyMissing',
      detail: `This endpoint requires an ${config.headerName} header (a unique value per operation, reused on retries).`,
    };
  }
  return { kind: 'rejected', problem: 'keyInvalid', detail: `The ${config.headerName} header is invalid: ${reading.reason}.` };
}

/** The claim request of a keyed request (scope and fingerprint), or the rejection the caller answers. */
async function readClaimRequest(ctx: Context, config: ResolvedOptions, key: string): Promise<ClaimRequestReading> {
  const reading = readFingerprintInput(ctx, config.fingerprintHeaders);
  if (reading.kind === 'unread') {
    return {
      kind: 'rejected',
      problem: 'bodyNotRead',
      detail: `This endpoint does not read a ${ctx.request.type || 'request'} body before checking the ${config.headerName}, so a retry could not be told apart from a different request. Send the body in a media type the endpoint parses.`,
    };
  }
  const scope = await callAsyncHook('scope', async () => scopeString(await config.scope(ctx)), 'the request is answered 500 request-failed');
  if (!scope.ok) return { kind: 'scopeFailed', error: scope.error };
  try {
    const { input } = reading;
    const salt = `${scope.value.length}:${scope.value}\n${key}`;
    const request = {
      scope: scope.value,
      key,
      fingerprint: withParts(fingerprint(input), fingerprintParts(input, salt)),
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: config.leaseMs,
      ttlSeconds: config.ttlSeconds,
    };
    reuseDescriptions.set(request, (stored) => differences(stored, input, salt));
    return { kind: 'request', request };
  } catch (error) {
    if (!(error instanceof UnfingerprintableBodyError)) throw error;
    return { kind: 'rejected', problem: 'bodyInvalid', detail: error.message };
  }
}

function answerRejection(ctx: Context, config: ResolvedOptions, rejection: Rejection): void {
  if (rejection.kind === 'scopeFailed') {
    return answerRequestFailed(
      ctx,
      rejection.error,
      'The idempotency scope function of this endpoint failed, so the request was not processed and nothing was stored for its Idempotency-Key. This is a fault of the server, not of the request.',
    );
  }
  countRejectedKey(config.routeName(ctx), ctx.method);
  sendProblem(ctx, rejection.problem, { detail: rejection.detail });
}

/** Lease mode: the claim commits on its own; the lease guards the handler; the completion is fenced. */
async function runLeased(ctx: Context, next: Next, request: ClaimRequest, config: ResolvedOptions, telemetry: RequestTelemetry): Promise<Outcome> {
  const claim = await settleClaim(
    () => config.store.claim(request),
    request,
    config,
    telemetry,
    () => clientGone(ctx),
  );
  if (claim.kind === 'unavailable') return storeUnavailable(ctx, config);
  if (claim.kind === 'busy') return inProgress(ctx, telemetry);
  if (claim.kind === 'existing') return duplicate(ctx, claim.record, request, config, telemetry);

  const { lease, record } = claim;
  const release = () => config.store.release(lease).catch(reportStoreError(OPERATION.RELEASE, telemetry));
  const renewal = keepLeaseAlive(config.store, lease, config.leaseMs);
  const outcome = await holdingClaim(release, telemetry, () => {
    ctx.idempotency = handlerContext(config, request, telemetry, record, lease, undefined);
    return runDownstream(ctx, next, config);
  }).finally(() => renewal.stop());
  if (outcome.kind !== 'store') {
    await release();
    return answerNotStored(ctx, outcome);
  }
  noteNotReplayable(outcome, telemetry);
  const fenced = await completeLeased(config.store, lease, outcome.completion).then(
    () => false,
    (error: unknown) => {
      reportStoreError(OPERATION.COMPLETE, telemetry)(error);
      return error instanceof FencedError;
    },
  );
  return fenced ? answerLostLease(ctx, config) : executedOutcome(record, telemetry);
}

/** Aborts when the client's connection closes before its response was sent. */
function clientGone(ctx: Context): AbortSignal {
  const gone = new AbortController();
  if (ctx.req.socket.destroyed) gone.abort();
  else ctx.res.once('close', () => gone.abort());
  return gone.signal;
}

/** Transactional mode: the claim, the handler's writes and the stored response share one transaction. */
async function runTransactional(ctx: Context, next: Next, request: ClaimRequest, config: ResolvedOptions, telemetry: RequestTelemetry): Promise<Outcome> {
  const claim = await settleClaim(
    () => config.store.claimInTransaction(request),
    request,
    config,
    telemetry,
    () => clientGone(ctx),
  );
  if (claim.kind === 'unavailable') return storeUnavailable(ctx, config);
  if (claim.kind === 'busy') return inProgress(ctx, telemetry);
  if (claim.kind === 'existing') return duplicate(ctx, claim.record, request, config, telemetry);

  const rollback = () => claim.rollback().catch(reportStoreError(OPERATION.ROLLBACK, telemetry));
  return holdingClaim(rollback, telemetry, async () => {
    ctx.idempotency = handlerContext(config, request, telemetry, claim.record, claim.lease, claim.db);
    const outcome = await runDownstream(ctx, next, config);
    if (outcome.kind !== 'store') {
      await rollback();
      return answerNotStored(ctx, outcome);
    }
    noteNotReplayable(outcome, telemetry);
    try {
      await claim.commit(outcome.completion);
    } catch (error) {
      return answerCommitFailed(ctx, config, telemetry, error);
    }
    return executedOutcome(claim.record, telemetry);
  });
}

/**
 * Runs `work` while the request holds its claim. A throw (the handler's) ends the claim with `release`
 * before it propagates: the key is retryable at once, and no transaction, lock or pooled connection is
 * left behind. Every other path ends the claim explicitly: completion, commit, rollback or release.
 */
async function holdingClaim<T>(release: () => Promise<unknown>, telemetry: RequestTelemetry, work: () => Promise<T>): Promise<T> {
  telemetry.claimed();
  try {
    return await work();
  } catch (error) {
    await release();
    throw error;
  } finally {
    telemetry.unclaimed();
  }
}

function handlerContext(
  config: ResolvedOptions,
  request: ClaimRequest,
  telemetry: RequestTelemetry,
  record: IdempotencyRecord,
  lease: Lease,
  db: ReturnType<typeof createIdempotencyContext>['db'],
) {
  return createIdempotencyContext({
    key: request.key,
    scope: request.scope,
    correlationId: telemetry.correlationId,
    attempt: record.attempt,
    db,
    lease,
    completedSteps: record.steps,
    store: config.store,
    headerName: config.headerName,
  });
}

function executedOutcome(record: IdempotencyRecord, telemetry: RequestTelemetry): Outcome {
  if (record.attempt === 1) return OUTCOME.EXECUTED;
  telemetry.takeover(record);
  return OUTCOME.TAKEOVER;
}

/** How a request differs from the one a record was written for (fingerprint-parts.ts), for its 422. */
const reuseDescriptions = new WeakMap<ClaimRequest, (stored: string) => Differences | undefined>();

function duplicate(ctx: Context, record: IdempotencyRecord, request: ClaimRequest, config: ResolvedOptions, telemetry: RequestTelemetry): Outcome {
  const outcome = answerDuplicate(ctx, record, request.fingerprint, reuseDescriptions.get(request));
  if (outcome === OUTCOME.REPLAYED) markReplayAliases(ctx, config.replayedHeaderAliases);
  telemetry.duplicate(outcome, record);
  return outcome;
}

/**
 * A duplicate of a request still in progress, seen as the store's `busy` claim: it carries no record, so no
 * remaining lease, and none is needed: the Retry-After is the documented default, as for any key in progress.
 */
function inProgress(ctx: Context, telemetry: RequestTelemetry): Outcome {
  telemetry.inProgress();
  return answerInProgress(ctx, DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS);
}

function noteNotReplayable(outcome: Extract<HandlerOutcome, { kind: 'store' }>, telemetry: RequestTelemetry): void {
  if (outcome.notReplayable) telemetry.notReplayable(outcome.notReplayable);
}

function storeUnavailable(ctx: Context, config: ResolvedOptions): Outcome {
  sendProblem(ctx, 'storeUnavailable', {
    detail: 'The idempotency store could not be reached, so the request was not processed. Retry later with the same Idempotency-Key.',
    retryAfterSeconds: config.storeRetryAfterSeconds,
  });
  return OUTCOME.STORE_UNAVAILABLE;
}

/**
 * A store failure after the handler ran cannot be answered with an error: the operation happened.
 * The handler's response goes out; the record is left to its lease (lease mode) and the failure to
 * diag and the request's span.
 */
function reportStoreError(operation: Operation, telemetry: RequestTelemetry): (error: unknown) => void {
  return (error) => {
    telemetry.storeFailure(error, operation);
    if (error instanceof FencedError) diag.warn(`koa-idempotency: ${operation} refused: ${error.message}`);
    else diag.error(`koa-idempotency: ${operation} failed`, error);
  };
}
