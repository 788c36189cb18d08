import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace';
import { AggregationTemporality, PeriodicExportingMetricReader, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { builtEntry } from './library.js';

/**
 * "Telemetry on": the OpenTelemetry Node SDK as the library's docs set it up: HTTP server spans (which
 * the middleware annotates), the library's correlation span processor ahead of a BatchSpanProcessor,
 * and the library's metrics. The exporters drop everything, so the benchmark measures the cost of
 * producing telemetry, not of shipping it.
 */
export async function startTelemetry(): Promise<NodeSDK> {
  const { idempotencyTracing } = await builtEntry('entries/otel.js');
  const tracing = idempotencyTracing();
  const sdk = new NodeSDK({
    serviceName: 'koa-idempotency-bench',
    autoDetectResources: false,
    spanProcessors: [tracing.spanProcessor, new BatchSpanProcessor({ exporter: new DiscardingSpanExporter() })],
    metricReaders: [new PeriodicExportingMetricReader({ exporter: new DiscardingMetricExporter(), exportIntervalMillis: 10_000 })],
    instrumentations: [new HttpInstrumentation()],
  });
  sdk.start();
  return sdk;
}

class DiscardingSpanExporter implements SpanExporter {
  export(_spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    done({ code: ExportResultCode.SUCCESS });
  }
  async shutdown(): Promise<void> {}
}

class DiscardingMetricExporter implements PushMetricExporter {
  export(_metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    done({ code: ExportResultCode.SUCCESS });
  }
  selectAggregationTemporality(): AggregationTemporality {
    return AggregationTemporality.CUMULATIVE;
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}
