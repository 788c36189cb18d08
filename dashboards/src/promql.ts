import { labels, nameRegex, type HistogramPart, type Naming, type Series } from './prometheus-names.js';

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

const LEGACY_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** A label name as PromQL writes it: bare when it has only legacy characters, else quoted (`"http.route"`, Prometheus 3). */
export function labelName(name: string): string {
  return LEGACY_NAME.test(name) ? name : JSON.stringify(name);
}

/** An alternation of label values, as a regex: `replayed|in_progress`. */
export function anyOf(values: readonly string[]): string {
  return values.join('|');
}

export function sumBy(by: readonly string[], expr: string): string {
  return by.length === 0 ? `sum(${expr})` : `sum by (${by.map(labelName).join(', ')}) (${expr})`;
}

/** The builders bound to one naming of the series and labels. */
export function promql(naming: Naming) {
  const LABEL = labels(naming);

  /**
   * `{__name__=~"idempotency_requests(_total)?", job=~"$service"}`, or `name{job=~"$service"}` when the
   * name is the same in every pipeline. Values are written as JSON strings, which PromQL reads alike (a
   * dot escaped in a regex is `\\.`).
   */
  function selector(series: Series, matchers: Matchers, part?: HistogramPart): string {
    const name = nameRegex(naming, series, part);
    const matched = Object.entries(matchers).map(([label, regex]) => `${labelName(label)}=~${JSON.stringify(regex)}`);
    if (LEGACY_NAME.test(name)) return `${name}{${matched.join(', ')}}`;
    return `{${[`__name__=~${JSON.stringify(name)}`, ...matched].join(', ')}}`;
  }

  function rate(series: Series, matchers: Matchers, part?: HistogramPart): string {
    return `rate(${selector(series, matchers, part)}[${RATE_INTERVAL}])`;
  }

  return {
    LABEL,
    selector,
    rate,
    /** Growth over the dashboard's whole time range (tables answer "over the range you are looking at"). */
    increaseOverRange: (series: Series, matchers: Matchers) => `increase(${selector(series, matchers)}[${RANGE}])`,
    /**
     * `histogram_quantile(q, sum by (le, ...) (rate(<buckets>[$__rate_interval])))`. The same expression reads a
     * native histogram: its one series matches the bucket regex, has no `le` to group by, and histogram_quantile
     * takes its buckets from the sample (PromQL docs, histogram_quantile: a mix of classic and native is allowed).
     */
    quantile: (q: number, series: Series, matchers: Matchers, by: readonly string[] = []) =>
      `histogram_quantile(${q}, ${sumBy([LABEL.BUCKET, ...by], rate(series, matchers, 'buckets'))})`,
    /**
     * Observations per second: the classic `_count` series, or else the count of the native histogram
     * (`histogram_count`, which reads no float series). Never both: `or` keeps the left side's series.
     */
    countRate: (series: Series, matchers: Matchers, by: readonly string[]) =>
      `${sumBy(by, rate(series, matchers, 'count'))} or histogram_count(${sumBy(by, rate(series, matchers, 'native'))})`,
  };
}
