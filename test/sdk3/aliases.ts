import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The SDK 3 leg (`KOA_IDEMPOTENCY_OTEL_SDK=3 npm test -- …`, run by .ci/run): every `@opentelemetry/*` import of
 * the tests and of src/ resolves to the copy installed in test/sdk3/node_modules (`npm ci --prefix test/sdk3`),
 * so the same suites run against SDK 3 while the main lock file keeps SDK 2. SDK 3 merged sdk-trace-base and
 * sdk-trace-node into `@opentelemetry/sdk-trace`; test/helpers/otel-sdk.ts covers the constructors that changed.
 */
export const SDK3_ENV = 'KOA_IDEMPOTENCY_OTEL_SDK';
const PACKAGES = fileURLToPath(new URL('./node_modules/@opentelemetry/', import.meta.url));
const MERGED_INTO_SDK_TRACE = ['sdk-trace-base', 'sdk-trace-node'];

export function sdk3Aliases(): Array<{ find: string; replacement: string }> {
  if (process.env[SDK3_ENV] !== '3') return [];
  if (!existsSync(`${PACKAGES}sdk-trace`)) {
    throw new Error(`${SDK3_ENV}=3 needs the SDK 3 packages: run npm ci --prefix test/sdk3`);
  }
  const installed = readdirSync(PACKAGES).map((name) => ({ find: `@opentelemetry/${name}`, replacement: `${PACKAGES}${name}` }));
  const merged = MERGED_INTO_SDK_TRACE.map((name) => ({ find: `@opentelemetry/${name}`, replacement: `${PACKAGES}sdk-trace` }));
  return [...installed, ...merged];
}
