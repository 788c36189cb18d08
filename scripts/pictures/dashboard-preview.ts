import type { TopLevelSpec } from 'vega-lite';

/**
 * A dashboard drawn as a grid of small charts, one per panel with the panel's title, from what each panel's queries
 * returned on a real Prometheus (test/dashboards-e2e.test.ts gathers it after the demo traffic). A reader sees what
 * the dashboard shows before importing it into Grafana.
 */

/** One series of one panel query: its legend (the panel's legendFormat filled in) and its samples. */
export interface PreviewSeries {
  name: string;
  /** A table's column (the query's refId); a table's row is the series name. */
  column?: string;
  /** A table column's own unit (a field override), e.g. percentunit. */
  unit?: string;
  /** A table cell that is text (a trace name), shown as it is instead of the number. */
  text?: string;
  /** [seconds since the start of the traffic, value]. */
  points: Array<[number, number]>;
}

export interface PreviewPanel {
  title: string;
  /** Grafana's panel type: timeseries as lines, table as a table, stat as its last value, text as its text. */
  type: string;
  /** Grafana's unit of the panel (reqps, s, percentunit, short). */
  unit?: string;
  series: PreviewSeries[];
  /** A text panel's content (markdown, shown as plain lines). */
  content?: string;
}

export interface DashboardPreview {
  title: string;
  subtitle: string;
  /** The time range the panels show, from 0: every chart gets the same axis. */
  durationSeconds: number;
  panels: PreviewPanel[];
}

type ConcatPart = Extract<TopLevelSpec, { concat: unknown }>['concat'][number];

const CHART = { width: 300, height: 120 };
const UNIT_TITLES: Record<string, string> = { reqps: 'requests/s', s: 'seconds', percentunit: 'ratio', short: 'count' };

export function dashboardPreviewSpec(preview: DashboardPreview): TopLevelSpec {
  return {
    title: { text: preview.title, subtitle: preview.subtitle },
    columns: 2,
    concat: preview.panels.map((panel) => panelChart(panel, preview.durationSeconds)),
    // Each panel has its own scales and legend, as in Grafana.
    resolve: { scale: { x: 'independent', y: 'independent', color: 'independent' }, legend: { color: 'independent' } },
  };
}

function panelChart(panel: PreviewPanel, durationSeconds: number): ConcatPart {
  if (panel.type === 'stat') return statChart(panel);
  if (panel.type === 'table') return tableChart(panel);
  if (panel.type === 'text') return textChart(panel);
  const values = panel.series.flatMap((series) => series.points.map(([seconds, value]) => ({ series: series.name, seconds, value })));
  const legend = { orient: 'right' as const, title: null, labelLimit: 0, symbolSize: 60 };
  return {
    title: panel.title,
    ...CHART,
    data: { values },
    mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'seconds', type: 'quantitative', title: 'seconds into the traffic', scale: { domain: [0, durationSeconds] } },
      y: { field: 'value', type: 'quantitative', title: unitTitle(panel.unit) },
      color: { field: 'series', type: 'nominal', legend },
    },
  };
}

/** A table panel: a row per series, a column per query, each cell its instant value. */
function tableChart(panel: PreviewPanel): ConcatPart {
  if (panel.series.length === 0) return noData(panel);
  const cells = panel.series.map((series) => ({
    row: series.name,
    column: series.column ?? '',
    text: series.text ?? formatStat(series.points.at(-1)?.[1], series.unit === 'percentunit'),
  }));
  return {
    title: panel.title,
    // Wider than a chart: a cell's text is centred in its column and would run into the row labels.
    width: CHART.width + 120,
    data: { values: cells },
    mark: { type: 'text', fontSize: 12 },
    encoding: {
      // sort null: columns and rows in the order the panel gives them, as Grafana shows a table.
      x: { field: 'column', type: 'nominal', sort: null, title: null, axis: { orient: 'top', labelAngle: 0 } },
      y: { field: 'row', type: 'nominal', sort: null, title: null, axis: { labelLimit: 0 } },
      text: { field: 'text' },
    },
  };
}

/** A text panel: its content as plain lines, wrapped to the chart's width. */
function textChart(panel: PreviewPanel): ConcatPart {
  // Only the markup that would show as stray characters: an underscore is part of attribute names here.
  const plain = (panel.content ?? '').replace(/`|\*\*/g, '');
  const lines = plain.split('\n').flatMap((paragraph) => (paragraph.trim() ? wrap(paragraph, TEXT_LINE_CHARS) : ['']));
  return {
    title: panel.title,
    ...CHART,
    data: { values: lines.map((line, index) => ({ line, index })) },
    mark: { type: 'text', align: 'left', baseline: 'top', fontSize: 10, x: 0 },
    encoding: { y: { field: 'index', type: 'quantitative', axis: null, scale: { domain: [0, Math.max(lines.length, 10)], reverse: true } }, text: { field: 'line' } },
  };
}

const TEXT_LINE_CHARS = 62;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + word.length + 1 > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, line] : lines;
}

/** A panel whose queries returned nothing, as Grafana says it. */
function noData(panel: PreviewPanel): ConcatPart {
  return {
    title: panel.title,
    ...CHART,
    data: { values: [{ text: 'No data' }] },
    mark: { type: 'text', fontSize: 16, color: '#888' },
    encoding: { text: { field: 'text' } },
  };
}

/** A stat panel: its last value, large, as Grafana shows it. */
function statChart(panel: PreviewPanel): ConcatPart {
  const last = panel.series.map((series) => ({ series: series.name, value: series.points.at(-1)?.[1] ?? Number.NaN }));
  const percent = panel.unit === 'percentunit';
  return {
    title: panel.title,
    ...CHART,
    data: { values: last.map((entry) => ({ ...entry, text: formatStat(entry.value, percent) })) },
    layer: [
      { mark: { type: 'text', fontSize: 40, fontWeight: 'bold', color: '#3b7d23' }, encoding: { text: { field: 'text' } } },
      { mark: { type: 'text', fontSize: 11, dy: 36, color: '#555' }, encoding: { text: { field: 'series' } } },
    ],
  };
}

function formatStat(value: number | undefined, percent: boolean): string {
  if (value === undefined || Number.isNaN(value)) return 'No data';
  return percent ? `${(value * 100).toFixed(1)} %` : formatNumber(value);
}

const formatNumber = (value: number) => String(Number(value.toPrecision(3)));

const unitTitle = (unit: string | undefined) => (unit ? (UNIT_TITLES[unit] ?? unit) : '');

/** Grafana's legendFormat: `{{label}}` replaced by the series' label, or the labels themselves when there is none. */
export function legendOf(legendFormat: string | undefined, labels: Readonly<Record<string, string>>, fallback: string): string {
  if (!legendFormat) {
    const text = Object.entries(labels)
      .map(([name, value]) => `${name}="${value}"`)
      .join(', ');
    return text || fallback;
  }
  // Grafana's pattern: any label name, dots included (`{{http.route}}` on UTF-8 names).
  return legendFormat.replace(/\{\{\s*(.+?)\s*\}\}/g, (_match, name: string) => labels[name] ?? '');
}
