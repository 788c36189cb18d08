import type { Context } from 'koa';
import { IdempotencyConfigError } from '../errors.js';
import { defaultRouteName, guardRequired, guardRouteName } from './guarded-hooks.js';
import {
  DEFAULT_LEASE_MS,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_METHODS,
  DEFAULT_TTL_SECONDS,
  DEFAULT_WAIT_MS,
  DEFAULT_WAIT_RECHECK_MS,
  storeSuccessAndClientErrors,
  type IdempotencyOptions,
  type TelemetryOptions,
} from './options.js';
import { NEVER_REPLAYED_HEADERS } from './response.js';
import { DEFAULT_HEADER_NAME, DEFAULT_MAX_KEY_LENGTH, DEFAULT_MIN_KEY_LENGTH, DEFAULT_STORE_RETRY_AFTER_SECONDS, REPLAYED_HEADER } from '../protocol.js';
import type { IdempotencyStore } from '../store/types.js';
import { headerName, integerInRange, nonNegativeInteger, optionalBoolean, optionalFunction, positiveInteger, timerMs, tokenList } from '../validation.js';

/**
 * The options with their defaults. `required` and `routeName` are guarded (see guarded-hooks.ts): they never throw.
 * `scope` and `shouldStore` are the application's functions as given: their callers guard them, since a
 * failure changes the answer.
 */
export interface ResolvedOptions {
  store: IdempotencyStore;
  headerName: string;
  methods: ReadonlySet<string>;
  required: (ctx: Context) => boolean;
  scope: (ctx: Context) => string | number | Promise<string | number>;
  minKeyLength: number;
  maxKeyLength: number;
  fingerprintHeaders: readonly string[];
  leaseMs: number;
  ttlSeconds: number;
  maxBodyBytes: number;
  shouldStore: (status: number) => boolean;
  excludeHeaders: ReadonlySet<string>;
  transactional: boolean;
  onInProgress: 'reject' | 'wait';
  waitMs: number;
  waitRecheckMs: number;
  storeRetryAfterSeconds: number;
  routeName: (ctx: Context) => string;
  includeKeyInProblems: boolean;
  /** Lower-case names, without `idempotent-replayed` itself. */
  replayedHeaderAliases: readonly string[];
  telemetry: Required<TelemetryOptions>;
}

/**
 * The longest key `maxKeyLength` may admit. Postgres indexes (scope, key) in a btree whose entries hold at most
 * about 2700 bytes: a longer key would fail every claim with 503, a retryable answer no retry can change. 1024
 * key bytes (keys are printable ASCII) plus a scope of at most MAX_SCOPE_BYTES fit.
 */
export const MAX_KEY_LENGTH_LIMIT = 1024;

/**
 * The longest `ttlSeconds`: 100 years. Far longer is a mistake (1e13 s is past the last timestamp Postgres
 * holds, year 294276, and every claim would fail with 503), and this keeps `now() + ttl` in range on every store.
 */
export const MAX_TTL_SECONDS = 100 * 365 * 24 * 60 * 60;

/**
 * The replay marker's aliases, lower-cased and without the marker itself. A name the library never replays
 * (Set-Cookie, Authorization, hop-by-hop) or the key's own header would change what a response means, so it is refused.
 */
function replayAliases(aliases: unknown, keyHeader: string): string[] {
  const names = new Set<string>();
  for (const alias of tokenList(aliases, 'replayedHeaderAliases', 'header name')) {
    const name = alias.toLowerCase();
    if (name === keyHeader.toLowerCase() || (NEVER_REPLAYED_HEADERS.has(name) && name !== REPLAYED_HEADER.toLowerCase())) {
      throw new IdempotencyConfigError(`replayedHeaderAliases: ${alias} cannot mark a replay (it is the key's header, or a header never replayed)`);
    }
    if (name !== REPLAYED_HEADER.toLowerCase()) names.add(name);
  }
  return [...names];
}

/** Header names lower-cased, as Node gives them on a request and Koa on a response. */
function lowerCaseHeaderNames(value: unknown, name: string): string[] {
  return tokenList(value, name, 'header name').map((header) => header.toLowerCase());
}

/**
 * Resolves defaults once and throws an IdempotencyConfigError for a bad value, at construction, not per request.
 * Every value is checked as JavaScript callers can pass it, without the type checker's help.
 */
export function resolveOptions(options: IdempotencyOptions): ResolvedOptions {
  if (!options || typeof options.store?.claim !== 'function') {
    throw new IdempotencyConfigError('idempotency() needs a `store`, e.g. new PostgresStore({ pool })');
  }
  const required = options.required ?? false;
  if (typeof required !== 'boolean') optionalFunction(required, 'required (a boolean or a function)');
  const scope = optionalFunction(options.scope, 'scope');
  const shouldStore = optionalFunction(options.shouldStore, 'shouldStore');
  const routeName = optionalFunction(options.routeName, 'routeName');
  const minKeyLength = integerInRange(options.minKeyLength ?? DEFAULT_MIN_KEY_LENGTH, 'minKeyLength', 1, MAX_KEY_LENGTH_LIMIT);
  const maxKeyLength = integerInRange(options.maxKeyLength ?? DEFAULT_MAX_KEY_LENGTH, 'maxKeyLength', minKeyLength, MAX_KEY_LENGTH_LIMIT);
  const onInProgress = options.onInProgress ?? 'reject';
  if (onInProgress !== 'reject' && onInProgress !== 'wait') throw new IdempotencyConfigError(`onInProgress must be 'reject' or 'wait'`);
  const keyHeader = headerName(options.headerName ?? DEFAULT_HEADER_NAME, 'headerName');
  const replayedHeaderAliases = replayAliases(options.replayedHeaderAliases ?? [], keyHeader);
  const leaseMs = timerMs(options.leaseMs ?? DEFAULT_LEASE_MS, 'leaseMs', 1);
  const ttlSeconds = integerInRange(options.ttlSeconds ?? DEFAULT_TTL_SECONDS, 'ttlSeconds', 1, MAX_TTL_SECONDS);
  if (ttlSeconds * 1000 <= leaseMs) {
    throw new IdempotencyConfigError(
      `ttlSeconds (${ttlSeconds} s) must be longer than leaseMs (${leaseMs} ms): a record that expires under a live lease can be taken over by a different request`,
    );
  }
  const telemetry = options.telemetry ?? {};
  if (typeof telemetry !== 'object' || telemetry === null) throw new IdempotencyConfigError('telemetry must be an object of options');
  return {
    store: options.store,
    headerName: keyHeader,
    methods: new Set(tokenList(options.methods ?? DEFAULT_METHODS, 'methods', 'method').map((method) => method.toUpperCase())),
    required: typeof required === 'function' ? guardRequired(required) : () => required,
    scope: scope ?? (() => ''),
    minKeyLength,
    maxKeyLength,
    fingerprintHeaders: lowerCaseHeaderNames(options.fingerprintHeaders ?? [], 'fingerprintHeaders'),
    leaseMs,
    ttlSeconds,
    maxBodyBytes: nonNegativeInteger(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES, 'maxBodyBytes'),
    shouldStore: shouldStore ?? storeSuccessAndClientErrors,
    // An alias set by a handler must not be stored: a replay sends the marker itself, and a first answer never does.
    excludeHeaders: new Set([...lowerCaseHeaderNames(options.excludeHeaders ?? [], 'excludeHeaders'), ...replayedHeaderAliases]),
    transactional: optionalBoolean(options.transactional, 'transactional') ?? false,
    onInProgress,
    waitMs: timerMs(options.waitMs ?? DEFAULT_WAIT_MS, 'waitMs', 0),
    waitRecheckMs: timerMs(options.waitRecheckMs ?? DEFAULT_WAIT_RECHECK_MS, 'waitRecheckMs', 1),
    storeRetryAfterSeconds: positiveInteger(options.storeRetryAfterSeconds ?? DEFAULT_STORE_RETRY_AFTER_SECONDS, 'storeRetryAfterSeconds'),
    routeName: routeName ? guardRouteName(routeName) : defaultRouteName,
    includeKeyInProblems: optionalBoolean(options.includeKeyInProblems, 'includeKeyInProblems') ?? false,
    replayedHeaderAliases,
    telemetry: {
      recordRawKey: optionalBoolean(telemetry.recordRawKey, 'telemetry.recordRawKey') ?? false,
      recordScope: optionalBoolean(telemetry.recordScope, 'telemetry.recordScope') ?? false,
      trustInboundCorrelationId: optionalBoolean(telemetry.trustInboundCorrelationId, 'telemetry.trustInboundCorrelationId') ?? false,
    },
  };
}
