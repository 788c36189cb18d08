import { readFileSync } from 'node:fs';
import type { SearchParams } from './jaeger-api.js';

/**
 * The Jaeger queries of a dashboard JSON, turned into the request Grafana's Jaeger datasource makes for them.
 * For `queryType: 'search'` it sends `GET /api/traces` with `service`, `operation`, `tags` (the logfmt of the
 * query editor converted to a JSON object), `minDuration`, `maxDuration`, `limit`, and the dashboard's time
 * range as `start`/`end` in microseconds with `lookback=custom`; a trace ID query loads `/api/traces/<id>`.
 * Dashboard variables are interpolated first, as the datasource does.
 */

interface DashboardTarget {
  queryType?: string;
  service?: string;
  operation?: string;
  tags?: string;
  limit?: number;
  query?: string;
  datasource?: { type?: string };
}
interface DashboardPanel {
  id: number;
  title: string;
  datasource?: { type?: string };
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
}

export interface JaegerPanelQuery {
  panelId: number;
  /** The title with variables interpolated. */
  title: string;
  kind: 'search' | 'traceId';
  search?: SearchParams;
  traceId?: string;
}

export function jaegerPanelQueries(dashboardPath: string, variables: Readonly<Record<string, string>>, range: { fromMs: number; toMs: number }): JaegerPanelQuery[] {
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { panels: DashboardPanel[] };
  const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
  const queries: JaegerPanelQuery[] = [];
  for (const panel of panels) {
    for (const target of panel.targets ?? []) {
      if ((target.datasource?.type ?? panel.datasource?.type) !== 'jaeger') continue;
      const title = interpolate(panel.title, variables);
      if (target.queryType === 'search') {
        queries.push({
          panelId: panel.id,
          title,
          kind: 'search',
          search: {
            service: interpolate(target.service ?? '', variables),
            tags: target.tags ? parseLogfmt(interpolate(target.tags, variables)) : undefined,
            limit: target.limit,
            startUs: range.fromMs * 1_000,
            endUs: range.toMs * 1_000,
          },
        });
      } else if (target.queryType === undefined || target.queryType === 'traceId') {
        queries.push({ panelId: panel.id, title, kind: 'traceId', traceId: interpolate(target.query ?? '', variables) });
      } else {
        throw new Error(`panel ${panel.id}: Jaeger query type ${target.queryType} is not mapped to an API call by this test`);
      }
    }
  }
  return queries;
}

/** `$name` and `${name}` (the forms the bundled dashboards use). */
function interpolate(text: string, variables: Readonly<Record<string, string>>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (match, braced: string | undefined, bare: string | undefined) => variables[(braced ?? bare)!] ?? match);
}

/** `k=v k2="v 2"` → { k: 'v', k2: 'v 2' }: the logfmt subset the query editor's tags field takes. */
export function parseLogfmt(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [, key, quoted, bare] of text.matchAll(/([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/g))
    result[key!] = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : bare!;
  return result;
}
