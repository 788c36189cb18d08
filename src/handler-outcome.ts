import type { Context, Next } from 'koa';
import type { ResolvedOptions } from './options.js';
import { captureResponse, snapshotHeaders, type HeaderSnapshot } from './response.js';
import type { Completion } from './store/types.js';

/** What the downstream chain's response leaves for the claim. */
export type HandlerOutcome =
  /** Store this completion (replayable or not). */
  | { kind: 'store'; completion: Completion }
  /** `shouldStore` refused the status (by default a 5xx): release the key. */
  | { kind: 'release' }
  /** `shouldStore` or the response capture threw: release the key and answer 500. */
  | { kind: 'failed'; error: unknown };

/**
 * Runs the downstream chain and decides what its response leaves. A throw of the chain propagates;
 * anything after it becomes an outcome, so the caller always gets to end its claim.
 */
export async function runDownstream(ctx: Context, next: Next, config: ResolvedOptions): Promise<HandlerOutcome> {
  const outerHeaders = snapshotHeaders(ctx);
  await next();
  return outcomeOf(ctx, config, outerHeaders);
}

function outcomeOf(ctx: Context, config: ResolvedOptions, outerHeaders: HeaderSnapshot): HandlerOutcome {
  // Both may throw: `shouldStore` is the application's hook, and the body is the application's value
  // (a BigInt, as pg's int8 parser or Prisma give, or a circular object fails its JSON serialisation).
  try {
    if (!config.shouldStore(ctx.status)) return { kind: 'release' };
    return { kind: 'store', completion: capture(ctx, config, outerHeaders) };
  } catch (error) {
    return { kind: 'failed', error };
  }
}

function capture(ctx: Context, config: ResolvedOptions, outerHeaders: HeaderSnapshot): Completion {
  const captured = captureResponse(ctx, config.maxBodyBytes, config.excludeHeaders, outerHeaders);
  return captured.replayable ? captured : { replayable: false, status: captured.status };
}
