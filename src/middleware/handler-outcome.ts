import type { Context, Next } from 'koa';
import { callHook } from '../hooks.js';
import type { ResolvedOptions } from './resolved-options.js';
import { captureResponse, restoreHeaders, snapshotHeaders, type HeaderSnapshot } from './response.js';
import type { Completion } from '../store/types.js';
import type { NotReplayableReason } from '../telemetry/names.js';

/** What the downstream chain's response leaves for the claim. */
export type HandlerOutcome =
  /**
   * Store this completion (replayable or not); `notReplayable` says why a non-replayable one is not, for
   * the request's span.
   */
  | { kind: 'store'; completion: Completion; notReplayable?: NotReplayableReason }
  /** `shouldStore` refused the status (by default a 5xx): release the key. */
  | { kind: 'release' }
  /** `shouldStore` or the response capture threw: release the key and answer 500. */
  | { kind: 'failed'; error: unknown };

export interface Downstream {
  outcome: HandlerOutcome;
  /** Puts the headers back as they were before the chain ran, for a problem answered in place of its response. */
  discardResponse: () => void;
}

/**
 * Runs the downstream chain and decides what its response leaves. A throw of the chain propagates;
 * anything after it becomes an outcome, so the caller always gets to end its claim.
 */
export async function runDownstream(ctx: Context, next: Next, config: ResolvedOptions): Promise<Downstream> {
  const outerHeaders = snapshotHeaders(ctx);
  await next();
  return { outcome: outcomeOf(ctx, config, outerHeaders), discardResponse: () => restoreHeaders(ctx, outerHeaders) };
}

function outcomeOf(ctx: Context, config: ResolvedOptions, outerHeaders: HeaderSnapshot): HandlerOutcome {
  // `shouldStore` is the application's hook: its failure is reported through diag (see hooks.ts).
  const store = callHook('shouldStore', () => config.shouldStore(ctx.status), 'the key is released and the request answered 500 request-failed');
  if (!store.ok) return { kind: 'failed', error: store.error };
  if (!store.value) return { kind: 'release' };
  // The body is the application's value: a BigInt (as pg's int8 parser or Prisma give) or a circular object
  // fails its JSON serialisation.
  try {
    const captured = captureResponse(ctx, config.maxBodyBytes, config.excludeHeaders, outerHeaders);
    if (captured.replayable) return { kind: 'store', completion: captured };
    return { kind: 'store', completion: { replayable: false, status: captured.status }, notReplayable: captured.reason };
  } catch (error) {
    return { kind: 'failed', error };
  }
}
