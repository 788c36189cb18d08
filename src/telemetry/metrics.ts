import { metrics, type Counter, type Histogram, type UpDownCounter, type Attributes } from '@opentelemetry/api';
import { errorCode } from '../error-code.js';
import { ATTR, INSTRUMENTATION_SCOPE, METRIC, OUTCOME, type Operation } from './names.js';

/**
 * The library's instruments, on the global MeterProvider the application registers (a no-op until it
 * does). They are created at first use, not at import, because the metrics API has no proxy provider:
 * a meter taken before the SDK starts would stay a no-op for good. Labels are low-cardinality only.
 */
interface Instruments {
  requests: Counter;
  requestDuration: Histogram;
  storeOperationDuration: Histogram;
  waitDuration: Histogram;
  activeRequests: UpDownCounter;
  recordsSwept: Counter;
}

/** Bucket boundaries in seconds: sub-millisecond store calls up to multi-second waits. */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

let instruments: Instruments | undefined;

export function libraryInstruments(): Instruments {
  if (instruments) return instruments;
  const meter = metrics.getMeter(INSTRUMENTATION_SCOPE);
  const histogram = (name: string, description: string) => meter.createHistogram(name, { description, unit: 's', advice: { explicitBucketBoundaries: SECONDS_BUCKETS } });
  instruments = {
    requests: meter.createCounter(METRIC.REQUESTS, { description: 'Requests that carried an idempotency key, by outcome', unit: '{request}' }),
    requestDuration: histogram(METRIC.REQUEST_DURATION, 'Duration of requests that carried an idempotency key, by outcome'),
    storeOperationDuration: histogram(METRIC.STORE_OPERATION_DURATION, 'Duration of idempotency store operations'),
    waitDuration: histogram(METRIC.WAIT_DURATION, 'Time duplicates waited for the first request to complete'),
    activeRequests: meter.createUpDownCounter(METRIC.ACTIVE_REQUESTS, { description: 'Requests holding an idempotency claim', unit: '{request}' }),
    recordsSwept: meter.createCounter(METRIC.RECORDS_SWEPT, { description: 'Expired idempotency records deleted', unit: '{record}' }),
  };
  return instruments;
}

/** Forget the instruments, so the next use binds to the current MeterProvider (tests swap providers). */
export function resetInstruments(): void {
  instruments = undefined;
}

/** Times one store operation into the store latency histogram. */
export async function timeStoreOperation<T>(operation: Operation, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const attributes: Attributes = { [ATTR.OPERATION]: operation };
  try {
    return await run();
  } catch (error) {
    attributes[ATTR.ERROR_TYPE] = errorType(error);
    throw error;
  } finally {
    libraryInstruments().storeOperationDuration.record((performance.now() - started) / 1000, attributes);
  }
}

/** Counts a request refused before any claim (missing or invalid key, a body that cannot be fingerprinted). */
export function countRejectedKey(route: string, method: string): void {
  libraryInstruments().requests.add(1, { [ATTR.HTTP_ROUTE]: route, [ATTR.HTTP_METHOD]: method, [ATTR.OUTCOME]: OUTCOME.INVALID_KEY });
}

/** A low-cardinality error type: the SQLSTATE or error code when there is one, else the class name. */
export function errorType(error: unknown): string {
  return errorCode(error) ?? (error instanceof Error ? error.name : 'Error');
}
