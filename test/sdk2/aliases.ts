import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The SDK 2 leg (`KOA_IDEMPOTENCY_OTEL_SDK=2 npm test -- …`, run by .ci/run): every `@opentelemetry/*` import of
 * the tests and of src/ resolves to the copy installed in test/sdk2/node_modules (`npm ci --prefix test/sdk2`),
 * so the suites written for SDK 3 (the main lock file's SDK) also run on SDK 2, which the library still supports.
 * SDK 2's `@opentelemetry/sdk-trace` 2.x is the implementation under its `sdk-trace-base` and `sdk-trace-node`
 * shims and already has SDK 3's shape (`TracerProvider`, processors taking `{ exporter }`); test/helpers/otel-sdk.ts
 * goes through the shims where SDK 2 users do (registration, the exporter-taking processor).
 */
export const OTEL_SDK_ENV = 'KOA_IDEMPOTENCY_OTEL_SDK';
export const SDK2_PACKAGES = fileURLToPath(new URL('./node_modules/@opentelemetry/', import.meta.url));

/** True in the SDK 2 leg. */
export function isSdk2Leg(): boolean {
  return process.env[OTEL_SDK_ENV] === '2';
}

export function sdk2Aliases(): Array<{ find: string; replacement: string }> {
  if (!isSdk2Leg()) return [];
  if (!existsSync(`${SDK2_PACKAGES}sdk-trace-base`)) {
    throw new Error(`${OTEL_SDK_ENV}=2 needs the SDK 2 packages: run npm ci --prefix test/sdk2`);
  }
  return readdirSync(SDK2_PACKAGES).map((name) => ({ find: `@opentelemetry/${name}`, replacement: `${SDK2_PACKAGES}${name}` }));
}
