import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter, TracerProvider } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { SDK_MAJOR, sdk2NodeTracerProvider, simpleSpanProcessor, tracerProvider } from '../helpers/otel-sdk.js';
import { isSdk2Leg, OTEL_SDK_ENV } from '../sdk2/aliases.js';

/** The global the API registers itself under, with its version (one per API major version). */
const API_GLOBAL = Symbol.for('opentelemetry.js.api.1');

/**
 * The SDK 2 leg must really run on SDK 2 and the other legs on SDK 3: a broken alias would silently rerun every
 * suite on the main lock file's SDK 3 (or mix the two SDKs' API copies).
 */
describe('the OpenTelemetry SDK the tests run on', () => {
  const sdk2Leg = isSdk2Leg();

  it(`is SDK ${sdk2Leg ? 2 : 3}, as the leg (${OTEL_SDK_ENV}) names it, with its API (${sdk2Leg ? '1.9' : '1.10'})`, () => {
    expect(SDK_MAJOR).toBe(sdk2Leg ? 2 : 3);
    const provider = tracerProvider({ spanProcessors: [simpleSpanProcessor(new InMemorySpanExporter())] });
    trace.setGlobalTracerProvider(provider);
    try {
      const api = (globalThis as Record<symbol, { version?: string } | undefined>)[API_GLOBAL];
      expect(api?.version).toMatch(sdk2Leg ? /^1\.9\./ : /^1\.10\./);
    } finally {
      trace.disable();
    }
  });

  it.runIf(sdk2Leg)('on SDK 2 (so only in that leg), sdk-trace-node builds on the aliased sdk-trace (one copy of the SDK classes)', () => {
    expect(sdk2NodeTracerProvider && new sdk2NodeTracerProvider()).toBeInstanceOf(TracerProvider);
  });
});
