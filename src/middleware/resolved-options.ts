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
import {
  headerName,
  integerInRange,
  MAX_TIMER_MS,
  nonNegativeInteger,
  optionalBoolean,
  optionalFunction,
  synchronousFunction,
  timerMs,
  tokenList,
} from '../validation.js';

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
 * The replay marker's aliases, lower-cased and without the marker itself. An alias names a replay marker (it
 * holds "replay"): any other name is one a handler may set (Content-Type, Location), whose value every replay
 * would replace with `true`.
 */
function replayAliases(aliases: unknown): string[] {
  const names = new Set<string>();
  for (const name of lowerCaseHeaderNames(aliases, 'replayedHeaderAliases')) {
    if (!name.includes('replay')) {
      throw new IdempotencyConfigError(`replayedHeaderAliases: ${name} is not a replay marker's name (such as Idempotency-Replayed): a replay would send it as "true"`);
    }
    if (name !== REPLAYED_HEADER.toLowerCase()) names.add(name);
  }
  return [...names];
}

/**
 * Every option's name, so that a misspelt one is refused: `transaction: true` for `transactional` would run
 * lease mode, silently, where the application counted on one transaction.
 */
const OPTION_NAMES = new Set(
  Object.keys({
    store: true,
    headerName: true,
    methods: true,
    required: true,
    scope: true,
    minKeyLength: true,
    maxKeyLength: true,
    fingerprintHeaders: true,
    leaseMs: true,
    ttlSeconds: true,
    maxBodyBytes: true,
    shouldStore: true,
    excludeHeaders: true,
    transactional: true,
    onInProgress: true,
    waitMs: true,
    waitRecheckMs: true,
    storeRetryAfterSeconds: true,
    routeName: true,
    includeKeyInProblems: true,
    replayedHeaderAliases: true,
    telemetry: true,
  } satisfies Record<keyof IdempotencyOptions, true>),
);
const TELEMETRY_OPTION_NAMES = new Set(
  Object.keys({ recordRawKey: true, recordScope: true, trustInboundCorrelationId: true } satisfies Record<keyof TelemetryOptions, true>),
);

/**
 * The options under their known names, each read once (a getter could give the check one value and the use
 * another), wherever the object holds them: its own properties, a class accessor, a prototype. A name it holds
 * that is not known, own or inherited, is refused.
 */
function readOptions<T extends object>(given: T, names: ReadonlySet<string>, where: string): T {
  const unknown: string[] = [];
  for (const name in given) if (!names.has(name)) unknown.push(name);
  if (unknown.length > 0) throw new IdempotencyConfigError(`${where}: unknown option ${unknown.map((name) => JSON.stringify(name)).join(', ')}`);
  return Object.fromEntries([...names].map((name) => [name, (given as Record<string, unknown>)[name]])) as T;
}

/** The store's primitives the middleware calls (store/types.ts): one missing would fail requests after the claim. */
const STORE_METHODS = ['claim', 'claimInTransaction', 'complete', 'release', 'renewLease', 'saveStep', 'watch'] as const;

function checkedStore(store: unknown, transactional: boolean): IdempotencyStore {
  const missing = STORE_METHODS.filter((method) => typeof (store as Record<string, unknown> | undefined)?.[method] !== 'function');
  if (missing.length > 0) {
    throw new IdempotencyConfigError(`idempotency() needs a \`store\` such as new PostgresStore({ pool })${store ? `; this one has no ${missing.join(', ')}` : ''}`);
  }
  if (transactional && (store as IdempotencyStore).transactions === false) {
    throw new IdempotencyConfigError('transactional: true needs a store with transactions (PostgresStore); this store has none, and every request would get 503');
  }
  return store as IdempotencyStore;
}

/** The key's header: a token, and none that Node joins or drops (Set-Cookie, Cookie, hop-by-hop) or the library strips. */
function keyHeaderName(value: unknown): string {
  const name = headerName(value, 'headerName');
  if (NEVER_REPLAYED_HEADERS.has(name.toLowerCase())) throw new IdempotencyConfigError(`headerName cannot be ${name}: Node or the library treat that header apart`);
  return name;
}

/** Header names lower-cased, as Node gives them on a request and Koa on a response. */
function lowerCaseHeaderNames(value: unknown, name: string): string[] {
  return tokenList(value, name, 'header name').map((header) => header.toLowerCase());
}

/**
 * Resolves defaults once and throws an IdempotencyConfigError for a bad value, at construction, not per request.
 * Every value is checked as JavaScript callers can pass it, without the type checker's help.
 */
export function resolveOptions(given: IdempotencyOptions): ResolvedOptions {
  if (typeof given !== 'object' || given === null) throw new IdempotencyConfigError('idempotency() needs its options, e.g. { store }');
  const options = readOptions(given, OPTION_NAMES, 'idempotency()');
  const methods = new Set(tokenList(options.methods ?? DEFAULT_METHODS, 'methods', 'method').map((method) => method.toUpperCase()));
  // An empty list turns the middleware off without a word, `required: true` included.
  if (methods.size === 0) throw new IdempotencyConfigError('methods is empty: the middleware would apply to no request');
  const transactional = optionalBoolean(options.transactional, 'transactional') ?? false;
  const store = checkedStore(options.store, transactional);
  const required = options.required ?? false;
  if (typeof required !== 'boolean') synchronousFunction(required, 'required (a boolean or a function)');
  const scope = optionalFunction(options.scope, 'scope');
  const shouldStore = synchronousFunction(options.shouldStore, 'shouldStore');
  const routeName = synchronousFunction(options.routeName, 'routeName');
  const minKeyLength = integerInRange(options.minKeyLength ?? DEFAULT_MIN_KEY_LENGTH, 'minKeyLength', 1, MAX_KEY_LENGTH_LIMIT);
  const maxKeyLength = integerInRange(options.maxKeyLength ?? DEFAULT_MAX_KEY_LENGTH, 'maxKeyLength', minKeyLength, MAX_KEY_LENGTH_LIMIT);
  const onInProgress = options.onInProgress ?? 'reject';
  if (onInProgress !== 'reject' && onInProgress !== 'wait') throw new IdempotencyConfigError(`onInProgress must be 'reject' or 'wait'`);
  const keyHeader = keyHeaderName(options.headerName ?? DEFAULT_HEADER_NAME);
  const replayedHeaderAliases = replayAliases(options.replayedHeaderAliases ?? []);
  const leaseMs = timerMs(options.leaseMs ?? DEFAULT_LEASE_MS, 'leaseMs', 1);
  const ttlSeconds = integerInRange(options.ttlSeconds ?? DEFAULT_TTL_SECONDS, 'ttlSeconds', 1, MAX_TTL_SECONDS);
  if (ttlSeconds * 1000 <= leaseMs) {
    throw new IdempotencyConfigError(
      `ttlSeconds (${ttlSeconds} s) must be longer than leaseMs (${leaseMs} ms): a record that expires under a live lease can be taken over by a different request`,
    );
  }
  if (typeof options.telemetry !== 'object' && options.telemetry !== undefined) throw new IdempotencyConfigError('telemetry must be an object of options');
  const telemetry = readOptions(options.telemetry ?? {}, TELEMETRY_OPTION_NAMES, 'idempotency() telemetry');
  return {
    store,
    headerName: keyHeader,
    methods,
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
    transactional,
    onInProgress,
    waitMs: timerMs(options.waitMs ?? DEFAULT_WAIT_MS, 'waitMs', 0),
    waitRecheckMs: timerMs(options.waitRecheckMs ?? DEFAULT_WAIT_RECHECK_MS, 'waitRecheckMs', 1),
    // RFC 9111 section 1.2.2: delta-seconds up to 2^31 - 1; a larger number would be written as 1e+21.
    storeRetryAfterSeconds: integerInRange(options.storeRetryAfterSeconds ?? DEFAULT_STORE_RETRY_AFTER_SECONDS, 'storeRetryAfterSeconds', 1, MAX_TIMER_MS),
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
