import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { duplicateTracesDashboard } from './duplicate-traces.js';
import { overviewDashboard } from './overview.js';

/** The bundled dashboards and the file each is committed as, next to `dashboards/generate.ts`. */
export const BUNDLED_DASHBOARDS = [
  { file: 'idempotency-overview.json', build: () => finish(overviewDashboard().build()) },
  { file: 'duplicate-traces.json', build: () => finish(duplicateTracesDashboard().build()) },
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
