/**
 * koa-idempotency/client: idempotentFetch, for the services that call an idempotent API. It loads neither Koa
 * nor `pg`, so a client-only service installs the package without using the server side.
 */
export { idempotentFetch, IdempotentFetchError } from '../client/idempotent-fetch.js';
export type { IdempotentFetchResult } from '../client/idempotent-fetch.js';
export {
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_BASE_DELAY_MS,
  DEFAULT_MAX_DELAY_MS,
  DEFAULT_DEADLINE_MS,
  DEFAULT_ATTEMPT_TIMEOUT_MS,
  DEFAULT_RETRY_STATUSES,
} from '../client/options.js';
export type { IdempotentFetchOptions, DerivedKey } from '../client/options.js';
export type { AttemptRecord, StopReason } from '../client/attempt-record.js';
export type { ProblemDetails } from '../client/problem-details.js';
export { resendCountAttributes, HTTP_REQUEST_RESEND_COUNT, CLIENT_TELEMETRY } from '../client/telemetry.js';
