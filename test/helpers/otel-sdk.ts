import { createRequire } from 'node:module';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { SimpleSpanProcessor, TracerProvider, type SpanExporter, type SpanProcessor, type TracerProviderOptions } from '@opentelemetry/sdk-trace';
import { isSdk2Leg, SDK2_PACKAGES } from '../sdk2/aliases.js';

/**
 * The SDK set-up the tests share, written for OpenTelemetry JS SDK 3 (the main lock file's SDK). In the SDK 2 leg
 * (see test/sdk2/aliases.ts) `@opentelemetry/sdk-trace` is SDK 2's 2.x, which has the same constructors; the two
 * calls whose form SDK 2 users write differently go through SDK 2's own entry points instead, so that leg proves
 * them: `new SimpleSpanProcessor(exporter)` from `sdk-trace-base` and `NodeTracerProvider.register()` from
 * `sdk-trace-node` (SDK 3 has neither).
 */
type Sdk2Classic = {
  SimpleSpanProcessor: new (exporter: SpanExporter) => SpanProcessor;
  NodeTracerProvider: new (options?: TracerProviderOptions) => TracerProvider & { register(): void };
};

// Loaded with require from test/sdk2 (the main tree has no sdk-trace-base): the CommonJS build the aliased
// `@opentelemetry/sdk-trace` import also resolves to, so there is one copy of SDK 2's classes.
const sdk2: Sdk2Classic | undefined = isSdk2Leg()
  ? {
      SimpleSpanProcessor: sdk2Require('sdk-trace-base').SimpleSpanProcessor as Sdk2Classic['SimpleSpanProcessor'],
      NodeTracerProvider: sdk2Require('sdk-trace-node').NodeTracerProvider as Sdk2Classic['NodeTracerProvider'],
    }
  : undefined;

function sdk2Require(name: string): Record<string, unknown> {
  return createRequire(SDK2_PACKAGES)(`@opentelemetry/${name}`) as Record<string, unknown>;
}

/** The OpenTelemetry JS SDK major version the tests run on: 2 in the SDK 2 leg, else 3. */
export const SDK_MAJOR: 2 | 3 = sdk2 ? 2 : 3;

/** SDK 2's `NodeTracerProvider` in the SDK 2 leg (for the leg's own check), else undefined. */
export const sdk2NodeTracerProvider = sdk2?.NodeTracerProvider;

export function simpleSpanProcessor(exporter: SpanExporter): SpanProcessor {
  return sdk2 ? new sdk2.SimpleSpanProcessor(exporter) : new SimpleSpanProcessor({ exporter });
}

/** A provider that is not registered globally. */
export function tracerProvider(options: TracerProviderOptions = {}): TracerProvider {
  return new TracerProvider(options);
}

/**
 * A provider registered as the global one, with an AsyncLocalStorage context manager and the W3C trace
 * context and baggage propagators: what SDK 2's `NodeTracerProvider.register()` does, done by hand on SDK 3.
 */
export function registerTracerProvider(options: TracerProviderOptions = {}): TracerProvider {
  if (sdk2) {
    const provider = new sdk2.NodeTracerProvider(options);
    provider.register();
    return provider;
  }
  const provider = new TracerProvider(options);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(provider);
  return provider;
}
