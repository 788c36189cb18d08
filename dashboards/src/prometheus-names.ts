import { ATTR, METRIC } from '../../src/telemetry/names.js';

/**
 * How the library's OpenTelemetry instruments are named once they reach Prometheus. The pipelines name them
 * differently, and the dashboards match every form of one naming with one `__name__=~` regex per series:
 *
 * | instrument (unit)                     | JS PrometheusExporter                | OTLP, underscore escaping (default)          | OTLP `NoTranslation`                  |
 * | ------------------------------------- | ------------------------------------ | -------------------------------------------- | ------------------------------------- |
 * | idempotency.requests (counter)        | idempotency_requests_total           | idempotency_requests_total                   | idempotency.requests                  |
 * | idempotency.request.duration (s)      | idempotency_request_duration_bucket  | idempotency_request_duration_seconds_bucket  | idempotency.request.duration_bucket   |
 * | ... as a native histogram             | idempotency_request_duration         | idempotency_request_duration_seconds         | idempotency.request.duration          |
 * | idempotency.active_requests (up/down) | idempotency_active_requests          | idempotency_active_requests                  | idempotency.active_requests           |
 *
 * Units in braces (`{request}`) are annotations and never become a suffix; `s` becomes `_seconds` in the
 * OTLP translation only; `UnderscoreEscapingWithoutSuffixes` and `NoTranslation` drop `_total` and `_seconds`, so
 * both suffixes are optional. A histogram is classic (`_bucket` series with an `le` label) or native (one series
 * without a suffix: scraped with `scrape_native_histograms` or converted to custom buckets, or an OTLP exponential
 * histogram), and the bucket regex matches both. Label names differ between the two namings (`http_route`,
 * `http.route`), which no one query can match: the UTF-8 naming has its own dashboard.
 */

/** How a Prometheus names series and labels: `escaped` (legacy characters, the default) or `utf8` (dots kept). */
export interface Naming {
  readonly id: 'escaped' | 'utf8';
  /** The regex (PromQL `__name__=~`) of an instrument's name before any suffix. */
  base(instrument: string): string;
  /** The label an attribute becomes. */
  label(attribute: string): string;
}

/** Every name escaped to [a-zA-Z0-9_:]: the JS PrometheusExporter, and OTLP with an underscore strategy. */
export const ESCAPED: Naming = { id: 'escaped', base: (instrument) => prometheusName(instrument), label: (attribute) => prometheusName(attribute) };

/** The OpenTelemetry names as they are: OTLP with `NoTranslation` (or `NoUTF8EscapingWithSuffixes`) into Prometheus 3. */
export const UTF8: Naming = { id: 'utf8', base: (instrument) => instrument.replaceAll('.', '\\.'), label: (attribute) => attribute };

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

/** The labels the dashboards read, in a naming (`idempotency.outcome` -> `idempotency_outcome` when escaped). */
export function labels(naming: Naming) {
  return {
    OUTCOME: naming.label(ATTR.OUTCOME),
    ROUTE: naming.label(ATTR.HTTP_ROUTE),
    OPERATION: naming.label(ATTR.OPERATION),
    /** Set by Prometheus from the scrape job, or by OTLP translation from `service.namespace/service.name`. */
    SERVICE: 'job',
    BUCKET: 'le',
  } as const;
}

/** `buckets`: a classic histogram's `_bucket` series or a native histogram (no suffix); `native`: only the latter. */
export type HistogramPart = 'buckets' | 'native' | 'count' | 'sum';

/**
 * The anchored regex (PromQL `__name__=~`) that matches a series' name in every pipeline of a naming:
 * `idempotency_requests(_total)?`, `idempotency_request_duration(_seconds)?(_bucket)?`.
 */
export function nameRegex(naming: Naming, series: Series, part?: HistogramPart): string {
  const base = naming.base(series.instrument);
  switch (series.kind) {
    case 'counter':
      return `${base}(_total)?`;
    case 'gauge':
      return base;
    case 'histogram': {
      if (!part) throw new TypeError(`${series.instrument} is a histogram: say which part (buckets, native, count, sum)`);
      const unit = series.unitSuffix ? `(_${series.unitSuffix})?` : '';
      if (part === 'native') return `${base}${unit}`;
      return part === 'buckets' ? `${base}${unit}(_bucket)?` : `${base}${unit}_${part}`;
    }
  }
}

/** The pipelines of the table above: how the series reach Prometheus, and the naming they come in. */
export const PIPELINES = {
  'js-exporter': { naming: ESCAPED, unitSuffix: false, totalSuffix: true },
  otlp: { naming: ESCAPED, unitSuffix: true, totalSuffix: true },
  'otlp-no-translation': { naming: UTF8, unitSuffix: false, totalSuffix: false },
} as const;
export type Pipeline = keyof typeof PIPELINES;

/** The exact names a pipeline produces with classic or native histograms, for tests and documentation. */
export function pipelineNames(series: Series, pipeline: Pipeline, histograms: 'classic' | 'native' = 'classic'): string[] {
  const { naming, unitSuffix, totalSuffix } = PIPELINES[pipeline];
  const base = naming.id === 'utf8' ? series.instrument : prometheusName(series.instrument);
  if (series.kind === 'counter') return [totalSuffix ? `${base}_total` : base];
  if (series.kind === 'gauge') return [base];
  const name = unitSuffix && series.unitSuffix ? `${base}_${series.unitSuffix}` : base;
  return histograms === 'native' ? [name] : ['bucket', 'count', 'sum'].map((part) => `${name}_${part}`);
}
