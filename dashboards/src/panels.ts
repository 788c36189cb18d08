import { DataqueryBuilder, PromQueryFormat } from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as TimeseriesBuilder } from '@grafana/grafana-foundation-sdk/timeseries';
import { LegendDisplayMode, LegendPlacement, VizLegendOptionsBuilder } from '@grafana/grafana-foundation-sdk/common';
import { PROMETHEUS } from './variables.js';

/** The building blocks shared by the overview's panels. */

export interface PromQuery {
  expr: string;
  /** Series name in the legend, e.g. `{{idempotency_outcome}}`. */
  legend?: string;
}

/** A range query on the dashboard's Prometheus datasource variable. */
export function rangeQuery(refId: string, query: PromQuery) {
  const builder = new DataqueryBuilder().datasource(PROMETHEUS).refId(refId).expr(query.expr).range();
  return query.legend ? builder.legendFormat(query.legend) : builder;
}

/** An instant query rendered as a table (one row per series, one `Value #<refId>` column). */
export function tableQuery(refId: string, expr: string) {
  return new DataqueryBuilder().datasource(PROMETHEUS).refId(refId).expr(expr).instant().format(PromQueryFormat.Table);
}

/** A time series panel on Prometheus, with a table legend that shows the last and max of each series. */
export function timeseries(title: string, description: string, unit: string, queries: readonly PromQuery[]) {
  const panel = new TimeseriesBuilder()
    .title(title)
    .description(description)
    .datasource(PROMETHEUS)
    .unit(unit)
    .min(0)
    .height(8)
    .span(12)
    .legend(new VizLegendOptionsBuilder().displayMode(LegendDisplayMode.Table).placement(LegendPlacement.Bottom).showLegend(true).calcs(['lastNotNull', 'max']));
  queries.forEach((query, index) => panel.withTarget(rangeQuery(refIdAt(index), query)));
  return panel;
}

/** A, B, C, ... */
function refIdAt(index: number): string {
  return String.fromCharCode('A'.charCodeAt(0) + index);
}
