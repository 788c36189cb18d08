import { register } from 'node:module';
import type { IncomingMessage } from 'node:http';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, ParentBasedSampler, type BatchSpanProcessorOptions, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace';
import { PeriodicExportingMetricReader, type IMetricReader, type PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter as OTLPTraceExporterJson } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPTraceExporterProto } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPMetricExporter as OTLPMetricExporterJson } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as OTLPMetricExporterProto } from '@opentelemetry/exporter-metrics-otlp-proto';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { KoaInstrumentation } from '@opentelemetry/instrumentation-koa';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { idempotencySampler, idempotencyTracing, keyHashAttributes } from '../../src/entries/otel.js';
import { resendCountAttributes } from '../../src/entries/client.js';

/**
 * The examples' OpenTelemetry set-up on OpenTelemetry JS SDK 3 (`@opentelemetry/sdk-node` 0.301, `sdk-trace` 3.x),
 * honouring the standard `OTEL_*` variables:
 * - traces and metrics go by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or a per-signal endpoint) is set,
 *   as `http/protobuf` (default) or `http/json` per `OTEL_EXPORTER_OTLP_PROTOCOL`;
 * - metrics are always served for Prometheus at `:9464/metrics` (`OTEL_EXPORTER_PROMETHEUS_PORT`/`_HOST`);
 * - the koa-idempotency span processor stamps the correlation ID on every span of a request;
 * - traces are sampled per intent (`idempotencySampler`, parent-based): `OTEL_TRACES_SAMPLER_ARG` is the share
 *   of intents kept (default 1, all), and the original request and every retry are kept or dropped together;
 * - spans are exported in batches as `OTEL_BSP_*` say (SDK 3's processor no longer reads them itself).
 *
 * Call it before importing Koa, node-postgres or the app: instrumentations patch modules as they load.
 */
export const DEFAULT_PROMETHEUS_PORT = 9464;
/** Default OTLP metric push interval (the SDK's own default). */
const DEFAULT_METRIC_EXPORT_INTERVAL_MS = 60_000;

type OtlpProtocol = 'http/protobuf' | 'http/json';

export interface ExampleTelemetry {
  serviceName: string;
  /** Where Prometheus scrapes this service, or undefined when the port was taken. */
  prometheusUrl: string | undefined;
  /** Whether traces and metrics are pushed by OTLP. */
  otlp: boolean;
  /** Flushes pending spans and metrics. */
  shutdown(): Promise<void>;
}

export async function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): Promise<ExampleTelemetry> {
  // ESM modules are patched through a loader hook; it must be in place before Koa and pg are imported.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

  const prometheusPort = Number(env.OTEL_EXPORTER_PROMETHEUS_PORT ?? DEFAULT_PROMETHEUS_PORT);
  const prometheus = new PrometheusExporter({ port: prometheusPort, host: env.OTEL_EXPORTER_PROMETHEUS_HOST, preventServerStart: true });
  const tracing = idempotencyTracing();
  const traceExporter = otlpEnabled(env, 'TRACES') ? otlpTraceExporter(otlpProtocol(env, 'TRACES')) : undefined;
  const metricExporter = otlpEnabled(env, 'METRICS') ? otlpMetricExporter(otlpProtocol(env, 'METRICS')) : undefined;

  const spanProcessors: SpanProcessor[] = [tracing.spanProcessor];
  if (traceExporter) spanProcessors.push(new BatchSpanProcessor({ exporter: traceExporter, ...batchOptions(env) }));
  const metricReaders: IMetricReader[] = [prometheus];
  if (metricExporter) {
    const exportIntervalMillis = Number(env.OTEL_METRIC_EXPORT_INTERVAL ?? DEFAULT_METRIC_EXPORT_INTERVAL_MS);
    metricReaders.push(new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis }));
  }

  const sdk = new NodeSDK({
    // Explicit, so the two example services never share a name even when OTEL_SERVICE_NAME is set globally.
    serviceName,
    // A downstream service (the ledger) follows its caller's decision; a request with no parent is decided on
    // its key's hash, which the HTTP hook below puts on the server span before the sampler runs.
    sampler: new ParentBasedSampler({ root: idempotencySampler({ ratio: samplingRatio(env) }) }),
    spanProcessors,
    metricReaders,
    instrumentations: [
      // Prometheus scrapes are not part of the application's traffic.
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (request: IncomingMessage) => request.socket.localPort === prometheusPort,
        startIncomingSpanHook: (request: IncomingMessage) => keyHashAttributes(request),
      }),
      // A retry of idempotentFetch() carries http.request.resend_count on its client span, as the HTTP conventions say.
      new UndiciInstrumentation({ startSpanHook: resendCountAttributes }),
      new KoaInstrumentation(),
      // Queries outside a request (the sweeper, LISTEN) would each be a lone trace.
      new PgInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  if (env.OTEL_SDK_DISABLED !== 'true') tracing.checkPropagation();

  const prometheusUrl = await prometheus.startServer().then(
    () => `http://localhost:${prometheusPort}/metrics`,
    (error: Error) => {
      console.warn(`${serviceName}: Prometheus metrics not served on port ${prometheusPort} (${error.message}); set OTEL_EXPORTER_PROMETHEUS_PORT`);
      return undefined;
    },
  );
  return { serviceName, prometheusUrl, otlp: traceExporter !== undefined, shutdown: () => sdk.shutdown() };
}

/** OTEL_TRACES_SAMPLER_ARG as the idempotency sampler's ratio; unset means keep everything. */
function samplingRatio(env: NodeJS.ProcessEnv): number {
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  if (arg === undefined || arg.trim() === '') return 1;
  const ratio = Number(arg);
  if (!(ratio >= 0 && ratio <= 1)) throw new Error(`OTEL_TRACES_SAMPLER_ARG=${arg} is not a sampling ratio from 0 to 1`);
  return ratio;
}

/**
 * The OTEL_BSP_* variables as the batch processor's options. SDK 2's BatchSpanProcessor read them itself; SDK 3's
 * reads only its options (the NodeSDK applies them solely to processors it builds from OTEL_TRACES_EXPORTER), so
 * without this OTEL_BSP_SCHEDULE_DELAY=100 would silently become the default 5 s.
 */
export function batchOptions(env: NodeJS.ProcessEnv): Omit<BatchSpanProcessorOptions, 'exporter'> {
  const read = (name: string): number | undefined => {
    const value = env[name];
    if (value === undefined || value.trim() === '') return undefined;
    const number = Number(value);
    if (!(Number.isInteger(number) && number >= 0)) throw new Error(`${name}=${value} is not a whole number of 0 or more`);
    return number;
  };
  return {
    scheduledDelayMillis: read('OTEL_BSP_SCHEDULE_DELAY'),
    exportTimeoutMillis: read('OTEL_BSP_EXPORT_TIMEOUT'),
    maxQueueSize: read('OTEL_BSP_MAX_QUEUE_SIZE'),
    maxExportBatchSize: read('OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
  };
}

function otlpEnabled(env: NodeJS.ProcessEnv, signal: 'TRACES' | 'METRICS'): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env[`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`]);
}

function otlpProtocol(env: NodeJS.ProcessEnv, signal: 'TRACES' | 'METRICS'): OtlpProtocol {
  const protocol = env[`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`] ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') {
    throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported by the examples; use http/protobuf or http/json (port 4318).`);
  }
  return protocol;
}

/** The exporters read their endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables. */
function otlpTraceExporter(protocol: OtlpProtocol): SpanExporter {
  return protocol === 'http/json' ? new OTLPTraceExporterJson() : new OTLPTraceExporterProto();
}

function otlpMetricExporter(protocol: OtlpProtocol): PushMetricExporter {
  return protocol === 'http/json' ? new OTLPMetricExporterJson() : new OTLPMetricExporterProto();
}
