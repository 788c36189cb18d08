import { readFileSync } from 'node:fs';
import type { DashboardPreview, PreviewPanel } from '../../scripts/pictures/dashboard-preview.js';
import { jaegerPanelQueries } from './dashboard-queries.js';
import { searchTraces, serviceOf, type JaegerTrace } from './jaeger-api.js';
import type { JaegerServer } from './jaeger.js';

/**
 * What dashboards/duplicate-traces.json shows, read from a real Jaeger as Grafana's Jaeger datasource reads it: each
 * table panel's search, one row per trace with the columns Grafana's search table has (trace name, duration), and
 * the text panel's content. The input of scripts/pictures/dashboard-preview.ts.
 */
interface DashboardJson {
  title: string;
  panels: Array<{ id: number; type: string; title: string; options?: { content?: string } }>;
}

export async function gatherJaegerPreview(
  jaeger: JaegerServer,
  dashboardPath: string,
  variables: Readonly<Record<string, string>>,
  range: { fromMs: number; toMs: number },
): Promise<DashboardPreview> {
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as DashboardJson;
  const queries = jaegerPanelQueries(dashboardPath, variables, range);
  const panels: PreviewPanel[] = [];
  for (const panel of dashboard.panels) {
    const query = queries.find((candidate) => candidate.panelId === panel.id);
    if (!query?.search) {
      panels.push({ title: panel.title, type: panel.type, series: [], content: panel.options?.content });
      continue;
    }
    const { traces } = await searchTraces(jaeger, query.search);
    panels.push({ title: query.title, type: 'table', series: traces.sort(byStart).flatMap(rowsOf) });
  }
  return {
    title: dashboard.title,
    subtitle: 'Each table as the Jaeger datasource fills it from a real Jaeger, after the scenarios of test/system/jaeger-e2e.test.ts',
    durationSeconds: Math.round((range.toMs - range.fromMs) / 1_000),
    panels,
  };
}

const startOf = (trace: JaegerTrace) => Math.min(...trace.spans.map((span) => span.startTime));
const byStart = (a: JaegerTrace, b: JaegerTrace) => startOf(a) - startOf(b);

/** Grafana's columns for a trace: its root span as `service: operation`, and its duration. */
function rowsOf(trace: JaegerTrace): PreviewPanel['series'] {
  const root = trace.spans.find((span) => !span.references.some((reference) => reference.refType === 'CHILD_OF'));
  const endUs = Math.max(...trace.spans.map((span) => span.startTime + span.duration));
  const name = root ? `${serviceOf(trace, root) ?? '?'}: ${root.operationName}` : '?';
  const row = trace.traceID.slice(0, 16);
  return [
    { name: row, column: 'Trace name', text: name, points: [] },
    { name: row, column: 'Duration', text: `${((endUs - startOf(trace)) / 1_000).toFixed(1)} ms`, points: [] },
  ];
}
