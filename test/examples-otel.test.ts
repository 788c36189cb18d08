import { BatchSpanProcessor, InMemorySpanExporter, type BatchSpanProcessorOptions } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { batchOptions } from '../examples/shared/otel.js';

/** The scheduled delay a batch processor built with these options uses (SDK 3 keeps it in a private field). */
function scheduledDelayMs(options: Omit<BatchSpanProcessorOptions, 'exporter'>): unknown {
  const processor = new BatchSpanProcessor({ exporter: new InMemorySpanExporter(), ...options });
  return (processor as unknown as { _scheduledDelayMillis: unknown })._scheduledDelayMillis;
}

/**
 * The examples' batch span processor honours OTEL_BSP_*: SDK 2's processor read them itself, SDK 3's does not,
 * so after the move to SDK 3 the end-to-end tests' OTEL_BSP_SCHEDULE_DELAY=100 became the default 5 s (and
 * jaeger-sampling stopped waiting before the last batches arrived).
 */
describe("the examples' OTEL_BSP_* options", () => {
  it('gives the processor the schedule delay, export timeout and sizes the variables say', () => {
    const env = { OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_BSP_EXPORT_TIMEOUT: '2000', OTEL_BSP_MAX_QUEUE_SIZE: '4096', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '256' };
    expect(batchOptions(env)).toEqual({ scheduledDelayMillis: 100, exportTimeoutMillis: 2000, maxQueueSize: 4096, maxExportBatchSize: 256 });
    expect(scheduledDelayMs(batchOptions(env))).toBe(100);
  });

  it("leaves the SDK's defaults where a variable is unset or empty", () => {
    expect(scheduledDelayMs(batchOptions({ OTEL_BSP_SCHEDULE_DELAY: ' ' }))).toBe(5000);
  });

  it('refuses a value that is not a whole number of 0 or more, naming the variable', () => {
    expect(() => batchOptions({ OTEL_BSP_SCHEDULE_DELAY: '-1' })).toThrow('OTEL_BSP_SCHEDULE_DELAY=-1');
    expect(() => batchOptions({ OTEL_BSP_MAX_QUEUE_SIZE: 'lots' })).toThrow('OTEL_BSP_MAX_QUEUE_SIZE=lots');
  });
});
