import type { Dashboard, Panel } from '@grafana/grafana-foundation-sdk/dashboard';
import { panelsOf, substitute } from '../../dashboards/src/panel-queries.js';
import { legendOf, type DashboardPreview, type PreviewPanel } from '../../scripts/pictures/dashboard-preview.js';
import type { PrometheusServer } from './prometheus.js';

/**
 * What each panel of a dashboard shows, read from a real Prometheus as Grafana reads it: a time series panel's
 * queries over the range, a table's and a stat's at its end. The input of scripts/pictures/dashboard-preview.ts.
 */
interface Target {
  refId?: string;
  expr?: string;
  legendFormat?: string;
  instant?: boolean;
}

export async function gatherPreview(
  prometheus: PrometheusServer,
  dashboard: Dashboard,
  options: { macros: Readonly<Record<string, string>>; startMs: number; endMs: number; subtitle: string },
): Promise<DashboardPreview> {
  const range = { startS: options.startMs / 1000, endS: options.endMs / 1000, stepS: 1 };
  const panels: PreviewPanel[] = [];
  for (const panel of panelsOf(dashboard)) panels.push(await gatherPanel(prometheus, panel, options.macros, range));
  return { title: dashboard.title ?? '', subtitle: options.subtitle, durationSeconds: Math.round(range.endS - range.startS), panels };
}

async function gatherPanel(
  prometheus: PrometheusServer,
  panel: Panel,
  macros: Readonly<Record<string, string>>,
  range: { startS: number; endS: number; stepS: number },
): Promise<PreviewPanel> {
  const series: PreviewPanel['series'] = [];
  for (const target of (panel.targets ?? []) as Target[]) {
    if (typeof target.expr !== 'string') continue;
    const expr = substitute(target.expr, macros);
    const refId = target.refId ?? '';
    if (panel.type === 'timeseries' && !target.instant) {
      for (const result of await prometheus.queryRange(expr, range)) {
        series.push({
          name: legendOf(target.legendFormat, result.metric, refId),
          points: result.values.map(([timeS, value]) => [Math.round(timeS - range.startS), Number(value)]),
        });
      }
    } else {
      // A table row is named by its labels' values (the route), a column as the panel renames `Value #A`.
      const column = columnNames(panel)[`Value #${refId}`] ?? refId;
      for (const result of await prometheus.query(expr)) {
        const row = panel.type === 'table' ? Object.values(result.metric).join(' ') || refId : legendOf(target.legendFormat, result.metric, refId);
        series.push({ name: row, column, unit: columnUnit(panel, column), points: [[range.endS - range.startS, Number(result.value[1])]] });
      }
    }
  }
  return { title: panel.title ?? '', type: panel.type, unit: panel.fieldConfig?.defaults?.unit, series };
}

/** The `organize` transformation's renames (`Value #A` → `Duplicates`). */
function columnNames(panel: Panel): Record<string, string> {
  const organize = (panel.transformations ?? []).find((transformation) => transformation.id === 'organize');
  return (organize?.options as { renameByName?: Record<string, string> } | undefined)?.renameByName ?? {};
}

/** A column's unit from the panel's field overrides (`Duplicate ratio` in percent). */
function columnUnit(panel: Panel, column: string): string | undefined {
  const override = (panel.fieldConfig?.overrides ?? []).find((candidate) => candidate.matcher?.id === 'byName' && candidate.matcher.options === column);
  return override?.properties?.find((property) => property.id === 'unit')?.value as string | undefined;
}
