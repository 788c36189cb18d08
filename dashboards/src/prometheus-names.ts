import { ATTR, METRIC } from '../../src/telemetry/names.js';

/**
 * How the library's OpenTelemetry instruments are named once they reach Prometheus. Two pipelines name
 * them differently, and the dashboards match both with one `__name__=~` regex per series:
 *
 * | instrument (unit)                        | JS PrometheusExporter                | OTLP -> Collector / Prometheus OTLP receiver |
 * | ---------------------------------------- | ------------------------------------ | -------------------------------------------- |
 * | idempotency.requests (counter)           | idempotency_requests_total           | idempotency_requests_total                   |
 * | idempotency.request.duration (s)         | idempotency_request_duration_bucket  | idempotency_request_duration_seconds_bucket  |
 * | idempotency.active_requests (up/down)    | idempotency_active_requests          | idempotency_active_requests                  |
 *
 * Units in braces (`{request}`) are annotations and never become a suffix; `s` becomes `_seconds` in the
 * OTLP translation only. A Prometheus OTLP receiver set to `UnderscoreEscapingWithoutSuffixes` drops
 * `_total` too, so the counter suffix is optional as well. UTF-8 names (`NoUTF8EscapingWithSuffixes`,
 * `NoTranslation`) keep the dots and are not supported.
 */

export type SeriesKind = 'counter' | 'histogram' | 'gauge';

export interface Series {
  /** The OpenTelemetry instrument name, from METRIC. */
  readonly instrument: string;
  readonly kind: SeriesKind;
  /** The instrument's unit when it becomes a Prometheus suffix in the OTLP translation (`seconds`). */
  readonly unitSuffix?: 'seconds';
}

/** Every instrument the dashboards read. */
export const SERIES = {
  requests: { instrument: METRIC.REQUESTS, kind: 'counter' },
  requestDuration: { instrument: METRIC.REQUEST_DURATION, kind: 'histogram', unitSuffix: 'seconds' },
  storeOperationDuration: { instrument: METRIC.STORE_OPERATION_DURATION, kind: 'histogram', unitSuffix: 'seconds' },
  waitDuration: { instrument: METRIC.WAIT_DURATION, kind: 'histogram', unitSuffix: 'seconds' },
  activeRequests: { instrument: METRIC.ACTIVE_REQUESTS, kind: 'gauge' },
  recordsSwept: { instrument: METRIC.RECORDS_SWEPT, kind: 'counter' },
} as const satisfies Record<string, Series>;

/** Prometheus' escaping of an OpenTelemetry name: every character outside [a-zA-Z0-9_:] becomes `_`. */
export function prometheusName(otelName: string): string {
  return otelName.replace(/[^a-zA-Z0-9_:]/g, '_');
}

/** The label a metric attribute becomes (`idempotency.outcome` -> `idempotency_outcome`). */
export const LABEL = {
  OUTCOME: prometheusName(ATTR.OUTCOME),
  ROUTE: prometheusName(ATTR.HTTP_ROUTE),
  OPERATION: prometheusName(ATTR.OPERATION),
  /** Set by Prometheus from the scrape job, or by OTLP translation from `service.namespace/service.name`. */
  SERVICE: 'job',
  BUCKET: 'le',
} as const;

export type HistogramPart = 'bucket' | 'count' | 'sum';

/**
 * The anchored regex (PromQL `__name__=~`) that matches a series' name in every supported pipeline:
 * `idempotency_requests(_total)?`, `idempotency_request_duration(_seconds)?_bucket`.
 */
export function nameRegex(series: Series, part?: HistogramPart): string {
  const base = prometheusName(series.instrument);
  switch (series.kind) {
    case 'counter':
      return `${base}(_total)?`;
    case 'gauge':
      return base;
    case 'histogram': {
      if (!part) throw new TypeError(`${series.instrument} is a histogram: say which part (bucket, count, sum)`);
      const unit = series.unitSuffix ? `(_${series.unitSuffix})?` : '';
      return `${base}${unit}_${part}`;
    }
  }
}

/** The exact names each pipeline produces, for tests and documentation. */
export function pipelineNames(series: Series, pipeline: 'js-exporter' | 'otlp'): string[] {
  const base = prometheusName(series.instrument);
  if (series.kind === 'counter') return [`${base}_total`];
  if (series.kind === 'gauge') return [base];
  const unit = pipeline === 'otlp' && series.unitSuffix ? `_${series.unitSuffix}` : '';
  return (['bucket', 'count', 'sum'] as const).map((part) => `${base}${unit}_${part}`);
}
