import { diag } from '@opentelemetry/api';
import type { Context, Middleware, Next } from 'koa';
import { answerCommitFailed, answerNotStored } from './completion-failures.js';
import { createIdempotencyContext } from './context.js';
import { answerDuplicate, answerInProgress } from './duplicates.js';
import { FencedError } from './errors.js';
import { fingerprint, FINGERPRINT_VERSION, UnfingerprintableBodyError } from './fingerprint.js';
import { runDownstream } from './handler-outcome.js';
import { readKey } from './key.js';
import { readFingerprintInput, scopeString } from './request-identity.js';
import { completeLeased } from './lease-completion.js';
import { keepLeaseAlive } from './lease-renewal.js';
import { resolveOptions, type IdempotencyOptions, type ResolvedOptions } from './options.js';
import { sendProblem } from './problems.js';
import type { ClaimRequest, IdempotencyRecord, Lease } from './store/types.js';
import { countRejectedKey } from './telemetry/metrics.js';
import { OUTCOME, type Outcome } from './telemetry/names.js';
import { RequestTelemetry } from './telemetry/request-telemetry.js';
import { settleClaim } from './waiting.js';

/**
 * The Koa middleware. Per request: read the key, claim it, then either run the handler and store its
 * response, or answer from the record that holds the key (replay, 409, 422). The store owns atomicity;
 * this file owns the lifecycle and holds no SQL.
 */
export function idempotency(options: IdempotencyOptions): Middleware {
  const config = resolveOptions(options);
  const header = config.headerName.toLowerCase();

  return async function idempotencyMiddleware(ctx: Context, next: Next): Promise<void> {
    if (!config.methods.has(ctx.method)) return next();
    const reading = readKey(ctx.req.headers[header], config);
    if (reading.kind === 'absent') {
      if (!config.required(ctx)) return next();
      countRejectedKey(config.routeName(ctx), ctx.method);
      return sendProblem(ctx, 'keyMissing', { detail: `This endpoint requires an ${config.headerName} header (a unique value per operation, reused on retries).` });
    }
    if (reading.kind === 'invalid') {
      countRejectedKey(config.routeName(ctx), ctx.method);
      return sendProblem(ctx, 'keyInvalid', { detail: `The ${config.headerName} header is invalid: ${reading.reason}.` });
    }

    const request = await describeRequest(ctx, config, reading.key);
    if (!request) return;
    const telemetry = new RequestTelemetry(request.scope, request.key, { route: config.routeName(ctx), method: ctx.method }, config.telemetry);
    request.correlationId = telemetry.correlationId;
    request.traceparent = telemetry.traceparent();
    await telemetry.run(async () => {
      const run = config.transactional ? runTransactional : runLeased;
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

/** Scope and fingerprint of the request; answers 400 or 415 itself when the body cannot be fingerprinted. */
async function describeRequest(ctx: Context, config: ResolvedOptions, key: string): Promise<ClaimRequest | undefined> {
  const reading = readFingerprintInput(ctx, config.fingerprintHeaders);
  if (reading.kind === 'unread') {
    countRejectedKey(config.routeName(ctx), ctx.method);
    sendProblem(ctx, 'bodyNotRead', {
      detail: `This endpoint does not read a ${ctx.request.type || 'request'} body before checking the ${config.headerName}, so a retry could not be told apart from a different request. Send the body in a media type the endpoint parses.`,
    });
    return undefined;
  }
  try {
    return {
      scope: scopeString(await config.scope(ctx)),
      key,
      fingerprint: fingerprint(reading.input),
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: config.leaseMs,
      ttlSeconds: config.ttlSeconds,
    };
  } catch (error) {
    if (!(error instanceof UnfingerprintableBodyError)) throw error;
    countRejectedKey(config.routeName(ctx), ctx.method);
    sendProblem(ctx, 'bodyInvalid', { detail: error.message });
    return undefined;
  }
}

/** Lease mode: the claim commits on its own; the lease guards the handler; the completion is fenced. */
async function runLeased(ctx: Context, next: Next, request: ClaimRequest, config: ResolvedOptions, telemetry: RequestTelemetry): Promise<Outcome> {
  const claim = await settleClaim(() => config.store.claim(request), request, config, telemetry);
  if (claim === 'unavailable') return storeUnavailable(ctx, config);
  if (claim.kind === 'busy') return inProgress(ctx, telemetry);
  if (claim.kind === 'existing') return duplicate(ctx, claim.record, request, telemetry);

  const { lease, record } = claim;
  const release = () => config.store.release(lease).catch(reportStoreError('release', telemetry));
  const renewal = keepLeaseAlive(config.store, lease, config.leaseMs);
  const outcome = await holdingClaim(release, telemetry, () => {
    ctx.idempotency = handlerContext(config, request, telemetry, record, lease, undefined);
    return runDownstream(ctx, next, config);
  }).finally(() => renewal.stop());
  if (outcome.kind !== 'store') {
    await release();
    return answerNotStored(ctx, outcome);
  }
  await completeLeased(config.store, lease, outcome.completion).catch(reportStoreError('complete', telemetry));
  return executedOutcome(record, telemetry);
}

/** Transactional mode: the claim, the handler's writes and the stored response share one transaction. */
async function runTransactional(ctx: Context, next: Next, request: ClaimRequest, config: ResolvedOptions, telemetry: RequestTelemetry): Promise<Outcome> {
  const claim = await settleClaim(() => config.store.claimInTransaction(request), request, config, telemetry);
  if (claim === 'unavailable') return storeUnavailable(ctx, config);
  if (claim.kind === 'busy') return inProgress(ctx, telemetry);
  if (claim.kind === 'existing') return duplicate(ctx, claim.record, request, telemetry);

  const rollback = () => claim.rollback().catch(reportStoreError('rollback', telemetry));
  return holdingClaim(rollback, telemetry, async () => {
    ctx.idempotency = handlerContext(config, request, telemetry, claim.record, claim.lease, claim.db);
    const outcome = await runDownstream(ctx, next, config);
    if (outcome.kind !== 'store') {
      await rollback();
      return answerNotStored(ctx, outcome);
    }
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

function duplicate(ctx: Context, record: IdempotencyRecord, request: ClaimRequest, telemetry: RequestTelemetry): Outcome {
  const outcome = answerDuplicate(ctx, record, request.fingerprint);
  telemetry.duplicate(outcome, record);
  return outcome;
}

/** A busy claim carries no record, so no remaining lease: the Retry-After is the documented default. */
function inProgress(ctx: Context, telemetry: RequestTelemetry): Outcome {
  telemetry.busy();
  answerInProgress(ctx);
  return OUTCOME.CONFLICT;
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
function reportStoreError(operation: string, telemetry: RequestTelemetry): (error: unknown) => void {
  return (error) => {
    telemetry.storeFailure(error, operation);
    if (error instanceof FencedError) diag.warn(`koa-idempotency: ${operation} refused: ${error.message}`);
    else diag.error(`koa-idempotency: ${operation} failed`, error);
  };
}
