import { constants as http2Constants, type Http2Stream } from 'node:http2';
import { context, diag } from '@opentelemetry/api';
import type { Context, Middleware, Next } from 'koa';
import { readKey } from '../key.js';
import type { ClaimRequest } from '../store/types.js';
import { countRejectedKey } from '../telemetry/metrics.js';
import { withoutInboundCorrelationId } from '../telemetry/correlation.js';
import { OUTCOME, type Outcome } from '../telemetry/names.js';
import { answerCompletionFailed, answerDuplicate, answerInProgress, answerNotStored, answerRejection, answerStoreUnavailable } from './answers.js';
import { LEASE_MODE, TRANSACTIONAL_MODE, type ClaimMode, type HeldClaim, type StoreClaim } from './claim.js';
import { keyRejection, readClaimRequest, type KeyedRequest } from './claim-request.js';
import { isInProgress, waitForTurn, type ClaimAttempt } from './claim-settling.js';
import { createIdempotencyContext } from './context.js';
import { runDownstream, type Downstream } from './handler-outcome.js';
import type { IdempotencyOptions } from './options.js';
import { resolveOptions, type ResolvedOptions } from './resolved-options.js';
import { noteProblemSubject } from './problems.js';
import { handlerOwnsResponse } from './response.js';
import { RequestTelemetry } from './request-telemetry.js';

/**
 * The Koa middleware. Per request: read the key, claim it, then either answer from the record that holds
 * the key (replay, 409, 422) or run the handler and complete the claim (or abandon it). The store owns
 * atomicity; the middleware owns the lifecycle and holds no SQL; answers.ts writes every answer.
 */
export function idempotency(options: IdempotencyOptions): Middleware {
  const config = resolveOptions(options);
  const header = config.headerName.toLowerCase();
  const mode: ClaimMode = config.transactional ? TRANSACTIONAL_MODE : LEASE_MODE;

  return async function idempotencyMiddleware(ctx: Context, next: Next): Promise<void> {
    const reading = config.methods.has(ctx.method) ? readKey(ctx.req.headers[header], config) : undefined;
    if (reading === undefined || (reading.kind === 'absent' && !config.required(ctx))) {
      // Not ours: a method the middleware does not apply to, or no key where none is required.
      await (config.telemetry.trustInboundCorrelationId ? next() : nextWithoutInboundCorrelationId(next));
      return;
    }

    if (reading.kind === 'valid' && config.includeKeyInProblems) noteProblemSubject(ctx, { key: reading.key });
    const keyed = reading.kind === 'valid' ? await readClaimRequest(ctx, config, reading.key) : keyRejection(reading);
    if (keyed.kind !== 'request') {
      if (keyed.kind !== 'scopeFailed') countRejectedKey(config.routeName(ctx), ctx.method);
      return answerRejection(ctx, config, keyed);
    }
    const request = new IdempotentRequest(ctx, next, config, mode, keyed);
    await request.telemetry.run(() => request.handle());
  };
}

/** Runs the rest of an unkeyed request without the caller's correlation ID in the baggage it forwards. */
function nextWithoutInboundCorrelationId(next: Next): Promise<unknown> {
  const active = context.active();
  const cleaned = withoutInboundCorrelationId(active);
  return cleaned === active ? next() : context.with(cleaned, next);
}

/**
 * One keyed request, from its claim to its answer, in either mode (like AWS Powertools' IdempotencyHandler):
 * claim → duplicate? answer : run the handler → complete or abandon. Its state is in its fields.
 */
class IdempotentRequest implements ClaimAttempt<StoreClaim> {
  readonly request: ClaimRequest;
  readonly telemetry: RequestTelemetry;
  readonly #describeReuse: KeyedRequest['describeReuse'];

  constructor(
    private readonly ctx: Context,
    private readonly next: Next,
    readonly config: ResolvedOptions,
    private readonly mode: ClaimMode,
    keyed: KeyedRequest,
  ) {
    const { request } = keyed;
    this.request = request;
    this.#describeReuse = keyed.describeReuse;
    this.telemetry = new RequestTelemetry(request.scope, request.key, { route: config.routeName(ctx), method: ctx.method, mode: mode.name }, config.telemetry);
    request.correlationId = this.telemetry.correlationId;
    request.traceparent = this.telemetry.traceparent();
    noteProblemSubject(ctx, { correlationId: this.telemetry.correlationId });
  }

  /** Claim → a duplicate is answered from the record that holds the key; a claimed key runs the handler. */
  async handle(): Promise<void> {
    // A handler that throws has had its claim abandoned before the error propagates: the key is released.
    let outcome: Outcome = OUTCOME.RELEASED;
    try {
      const claim = await this.#claim();
      outcome = claim.kind === 'claimed' ? await this.#run(this.mode.hold(claim, this.config.store, this.config.leaseMs, this.telemetry)) : this.#answer(claim);
    } finally {
      this.telemetry.finish(outcome);
    }
  }

  claimOnce(): Promise<StoreClaim> {
    return this.mode.claim(this.config.store, this.request);
  }

  clientGone(): AbortSignal {
    const gone = new AbortController();
    if (this.ctx.req.socket.destroyed) gone.abort();
    else this.ctx.res.once('close', () => gone.abort());
    return gone.signal;
  }

  /** A key this request could not claim: the store failed (503), or another request holds it (a duplicate). */
  #answer(claim: Exclude<StoreClaim, { kind: 'claimed' }> | { kind: 'unavailable' }): Outcome {
    if (claim.kind === 'unavailable') return answerStoreUnavailable(this.ctx, this.config, 'unreachable');
    if (claim.kind === 'busy') {
      // The store's `busy` claim carries no record: another transaction holds the key.
      this.telemetry.inProgress();
      return answerInProgress(this.ctx);
    }
    const outcome = answerDuplicate(this.ctx, claim.record, this.request.fingerprint, this.#describeReuse, this.config);
    this.telemetry.duplicate(outcome, claim.record);
    return outcome;
  }

  /**
   * Claims the key; a duplicate of a request in progress waits for it where `onInProgress` is `'wait'`
   * (claim-settling.ts). A store failure comes back as `unavailable`: fail closed, the handler never runs.
   */
  async #claim(): Promise<StoreClaim | { kind: 'unavailable' }> {
    try {
      const first = await this.claimOnce();
      return this.config.onInProgress === 'wait' && isInProgress(first, this.request) ? await waitForTurn(this) : first;
    } catch (error) {
      diag.error('koa-idempotency: claim failed, answering 503', error);
      this.telemetry.storeFailure(error);
      return { kind: 'unavailable' };
    }
  }

  /**
   * Makes way for the problem that replaces the handler's response. A response the handler took out of Koa's
   * hands (its head flushed, `ctx.respond = false`) cannot be replaced, and no problem is written into it. In
   * transactional mode the failure rolled the handler's writes back, so the connection is cut: the client
   * retries rather than believe them done. In lease mode the handler's writes stand, and so does its answer.
   */
  #replaceResponse(discardResponse: () => void): void {
    const { ctx } = this;
    if (!handlerOwnsResponse(ctx)) return discardResponse();
    if (this.mode === TRANSACTIONAL_MODE) cutResponse(ctx);
  }

  /**
   * Runs the handler under the claim, then ends the claim: a throw (the handler's) abandons it before it
   * propagates, so the key is retryable at once and no transaction, lock or pooled connection is left
   * behind; a response not to store abandons it too; any other completes it.
   */
  async #run(claim: HeldClaim): Promise<Outcome> {
    const { ctx, config, telemetry, request } = this;
    telemetry.claimed();
    try {
      ctx.idempotency = createIdempotencyContext({
        key: request.key,
        scope: request.scope,
        correlationId: telemetry.correlationId,
        attempt: claim.record.attempt,
        db: claim.db,
        lease: claim.lease,
        completedSteps: claim.record.steps,
        store: config.store,
        headerName: config.headerName,
      });
      let downstream: Downstream;
      try {
        downstream = await runDownstream(ctx, this.next, config);
      } catch (error) {
        await claim.abandon();
        // Koa answers a thrown error only while the head is unsent; after that it leaves the response open.
        if (ctx.headerSent) cutResponse(ctx);
        throw error;
      }
      const { outcome, discardResponse } = downstream;
      if (outcome.kind !== 'store') {
        await claim.abandon();
        if (outcome.kind === 'failed') this.#replaceResponse(discardResponse);
        return answerNotStored(ctx, outcome);
      }
      if (outcome.notReplayable) telemetry.notReplayable(outcome.notReplayable);
      const failure = await claim.complete(outcome.completion);
      if (failure) {
        this.#replaceResponse(discardResponse);
        return answerCompletionFailed(ctx, config, failure);
      }
      if (claim.record.attempt === 1) return OUTCOME.EXECUTED;
      telemetry.takeover(claim.record);
      return OUTCOME.TAKEOVER;
    } finally {
      telemetry.unclaimed();
    }
  }
}

/**
 * Cuts a response off so that the client holds no complete answer (a response already whole cannot be taken
 * back: see the README). Over HTTP/2 only the request's stream is reset, with an error code: destroying its
 * socket ends the stream normally, a complete empty response.
 */
function cutResponse(ctx: Context): void {
  const { stream } = ctx.res as { stream?: Http2Stream };
  if (stream) stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
  else ctx.req.socket.destroy();
}
