import { VariableType, type Dashboard, type Panel, type RowPanel } from '@grafana/grafana-foundation-sdk/dashboard';

/**
 * The PromQL a dashboard runs, read back from the built JSON, for the tests (every query parses, names
 * a metric the library emits, and returns data from a real Prometheus) and the docs.
 */
export interface PanelQuery {
  panel: string;
  refId: string;
  expr: string;
  instant: boolean;
}

export function promQueries(dashboard: Dashboard): PanelQuery[] {
  return panelsOf(dashboard).flatMap((panel) =>
    (panel.targets ?? [])
      .map((target) => target as { refId?: string; expr?: unknown; instant?: boolean })
      .filter((target) => typeof target.expr === 'string')
      .map((target) => ({ panel: panel.title ?? '', refId: target.refId ?? '', expr: target.expr as string, instant: target.instant === true })),
  );
}

/** `label_values(<selector>, <label>)` of each Prometheus query variable. */
export function variableQueries(dashboard: Dashboard): Array<{ name: string; selector: string; label: string }> {
  return (dashboard.templating?.list ?? [])
    .filter((variable) => variable.type === VariableType.Query && typeof variable.query === 'string')
    .map((variable) => {
      const query = variable.query as string;
      const match = /^label_values\((.+),\s*([^\s,()]+)\)$/.exec(query);
      if (!match) throw new Error(`variable ${variable.name}: not a label_values() query: ${query}`);
      return { name: variable.name, selector: match[1]!, label: match[2]! };
    });
}

/** Every panel that queries data (rows are layout only). */
export function panelsOf(dashboard: Dashboard): Panel[] {
  return (dashboard.panels ?? []).flatMap((panel: Panel | RowPanel) => (panel.type === 'row' ? ((panel as RowPanel).panels ?? []) : [panel as Panel]));
}

/**
 * Replaces Grafana's macros and variables (`$__rate_interval`, `${service}`, `$route`) with values,
 * longest name first so `$__range` never eats the start of a longer name.
 */
export function substitute(expr: string, values: Readonly<Record<string, string>>): string {
  const names = Object.keys(values).sort((a, b) => b.length - a.length);
  let result = expr;
  for (const name of names) result = result.replaceAll(`\${${name}}`, values[name]!).replaceAll(`$${name}`, values[name]!);
  const left = /\$\{?[a-zA-Z_]\w*/.exec(result);
  if (left) throw new Error(`no value for ${left[0]} in: ${expr}`);
  return result;
}
