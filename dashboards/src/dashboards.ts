import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { duplicateTracesDashboard } from './duplicate-traces.js';
import { overviewDashboard } from './overview.js';
import { ESCAPED, UTF8 } from './prometheus-names.js';

/**
 * The bundled dashboards, the file each is committed as (next to `dashboards/generate.ts`), and for a Prometheus
 * dashboard the naming of the series it reads (prometheus-names.ts).
 */
export const BUNDLED_DASHBOARDS = [
  { file: 'idempotency-overview.json', naming: ESCAPED.id, build: () => finish(overviewDashboard(ESCAPED).build()) },
  { file: 'idempotency-overview-utf8.json', naming: UTF8.id, build: () => finish(overviewDashboard(UTF8).build()) },
  { file: 'duplicate-traces.json', naming: undefined, build: () => finish(duplicateTracesDashboard().build()) },
] as const;

/** Stable panel ids (1, 2, ...), so links to a panel (`viewPanel=`) survive regeneration. */
function finish(dashboard: Dashboard): Dashboard {
  dashboard.panels?.forEach((panel, index) => {
    panel.id = index + 1;
  });
  return dashboard;
}

/** The committed form: two-space JSON and a final newline. */
export function serialize(dashboard: Dashboard): string {
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}
