import { LABEL, nameRegex, type HistogramPart, type Series } from './prometheus-names.js';

/**
 * Small PromQL builders, so every panel query reads as what it computes and the label and metric
 * names come from one place. Every matcher is a regex (`=~`): Grafana renders a multi-value or "All"
 * variable as a regex, and the outcome groups below are alternations.
 */

/** Grafana's interval macros; the e2e test substitutes them before sending a query to Prometheus. */
export const RATE_INTERVAL = '$__rate_interval';
export const RANGE = '$__range';

/** Label -> regex. */
export type Matchers = Readonly<Record<string, string>>;

/**
 * `{__name__=~"idempotency_requests(_total)?", job=~"$service"}`, or `name{job=~"$service"}` when the
 * name is the same in every pipeline.
 */
export function selector(series: Series, matchers: Matchers, part?: HistogramPart): string {
  const name = nameRegex(series, part);
  const labels = Object.entries(matchers).map(([label, regex]) => `${label}=~"${regex}"`);
  if (/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) return `${name}{${labels.join(', ')}}`;
  return `{${[`__name__=~"${name}"`, ...labels].join(', ')}}`;
}

/** An alternation of label values, as a regex: `replayed|in_progress`. */
export function anyOf(values: readonly string[]): string {
  return values.join('|');
}

export function rate(series: Series, matchers: Matchers, part?: HistogramPart): string {
  return `rate(${selector(series, matchers, part)}[${RATE_INTERVAL}])`;
}

/** Growth over the dashboard's whole time range (tables answer "over the range you are looking at"). */
export function increaseOverRange(series: Series, matchers: Matchers): string {
  return `increase(${selector(series, matchers)}[${RANGE}])`;
}

export function sumBy(labels: readonly string[], expr: string): string {
  return labels.length === 0 ? `sum(${expr})` : `sum by (${labels.join(', ')}) (${expr})`;
}

/** `histogram_quantile(q, sum by (le, ...) (rate(<bucket>[$__rate_interval])))` */
export function quantile(q: number, series: Series, matchers: Matchers, by: readonly string[] = []): string {
  return `histogram_quantile(${q}, ${sumBy([LABEL.BUCKET, ...by], rate(series, matchers, 'bucket'))})`;
}
