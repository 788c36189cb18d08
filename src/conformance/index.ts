/**
 * koa-idempotency/conformance: the conformance suite every `IdempotencyStore` must pass, for any test
 * framework with `describe` and `it`. See `storeConformance()`.
 */
export { storeConformance } from './suite.js';
export { DEFAULT_CAPABILITIES, DEFAULT_CASE_TIMEOUT_MS, DEFAULT_SUITE_NAME } from './options.js';
export type { ConformanceSuite, OpenedStore, StoreCapabilities } from './options.js';
