import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import * as sdkTrace from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

/**
 * The few SDK constructors whose shape changed in OpenTelemetry JS SDK 3, for the tests that run on both SDKs
 * (see test/sdk3/aliases.ts). SDK 3 serves `@opentelemetry/sdk-trace-base` and `-node` from one package,
 * `@opentelemetry/sdk-trace`, whose provider is `TracerProvider` (no `register()`), and whose span processors
 * take an options object (`{ exporter }`) instead of the exporter. Typed as SDK 2, the main lock file's SDK.
 */
type ProviderOptions = ConstructorParameters<typeof sdkTrace.BasicTracerProvider>[0];
type Sdk3Trace = {
  TracerProvider: new (options?: ProviderOptions) => sdkTrace.BasicTracerProvider;
  SimpleSpanProcessor: new (options: { exporter: sdkTrace.SpanExporter }) => sdkTrace.SimpleSpanProcessor;
};

const sdk3 = 'TracerProvider' in sdkTrace ? (sdkTrace as unknown as Sdk3Trace) : undefined;

/** The OpenTelemetry JS SDK major version the tests run on: 3 in the SDK 3 leg, else 2. */
export const SDK_MAJOR: 2 | 3 = sdk3 ? 3 : 2;

export function simpleSpanProcessor(exporter: sdkTrace.SpanExporter): sdkTrace.SpanProcessor {
  return sdk3 ? new sdk3.SimpleSpanProcessor({ exporter }) : new sdkTrace.SimpleSpanProcessor(exporter);
}

/** A provider that is not registered globally (SDK 2's BasicTracerProvider, SDK 3's TracerProvider). */
export function tracerProvider(options: ProviderOptions = {}): sdkTrace.BasicTracerProvider {
  return sdk3 ? new sdk3.TracerProvider(options) : new sdkTrace.BasicTracerProvider(options);
}

/**
 * A provider registered as the global one, with an AsyncLocalStorage context manager and the W3C trace
 * context and baggage propagators: what SDK 2's `NodeTracerProvider.register()` does, done by hand on SDK 3.
 */
export function registerTracerProvider(options: ProviderOptions = {}): sdkTrace.BasicTracerProvider {
  if (!sdk3) {
    const provider = new NodeTracerProvider(options);
    provider.register();
    return provider;
  }
  const provider = new sdk3.TracerProvider(options);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(provider);
  return provider;
}
