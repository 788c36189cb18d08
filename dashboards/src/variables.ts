import { DatasourceVariableBuilder, QueryVariableBuilder, TextBoxVariableBuilder, VariableRefresh, VariableSort } from '@grafana/grafana-foundation-sdk/dashboard';
import type { DataSourceRef } from '@grafana/grafana-foundation-sdk/common';
import { SERIES, type Naming } from './prometheus-names.js';
import { promql } from './promql.js';

/**
 * Dashboard variables. Datasources are variables, never `__inputs`: a provisioned dashboard is not run
 * through the import form that fills `__inputs`, while a datasource variable resolves in both paths (to
 * the selected datasource, else the default one of its type). The uids below are those of
 * `provisioning/datasources.yaml`, preselected when they exist.
 */
export const VAR = {
  DATASOURCE: 'datasource',
  SERVICE: 'service',
  ROUTE: 'route',
  JAEGER: 'jaeger',
  JAEGER_SERVICE: 'jaeger_service',
  CORRELATION_ID: 'correlation_id',
  JAEGER_URL: 'jaeger_url',
} as const;

/** `$name`, as written in queries. */
export const ref = (name: (typeof VAR)[keyof typeof VAR]) => `$${name}`;

export const PROVISIONED_UID = { PROMETHEUS: 'prometheus', JAEGER: 'jaeger' } as const;

export const PROMETHEUS: DataSourceRef = { type: 'prometheus', uid: `\${${VAR.DATASOURCE}}` };
export const JAEGER: DataSourceRef = { type: 'jaeger', uid: `\${${VAR.JAEGER}}` };

/**
 * Every service (Prometheus `job`) and route that has reported the request counter. Grafana takes the label
 * of `label_values()` as written, dots included (`http.route`), and quotes it for Prometheus itself.
 */
function serviceValues(naming: Naming): string {
  const { LABEL, selector } = promql(naming);
  return `label_values(${selector(SERIES.requests, {})}, ${LABEL.SERVICE})`;
}
function routeValues(naming: Naming): string {
  const { LABEL, selector } = promql(naming);
  return `label_values(${selector(SERIES.requests, { [LABEL.SERVICE]: ref(VAR.SERVICE) })}, ${LABEL.ROUTE})`;
}

export function prometheusDatasource() {
  return new DatasourceVariableBuilder(VAR.DATASOURCE)
    .label('Prometheus')
    .type('prometheus')
    .current({ selected: true, text: 'Prometheus', value: PROVISIONED_UID.PROMETHEUS });
}

/** A multi-value variable read from Prometheus labels, "All" by default (the regex `.*`). */
function labelVariable(name: string, label: string, query: string, description: string) {
  return new QueryVariableBuilder(name)
    .label(label)
    .description(description)
    .datasource(PROMETHEUS)
    .query(query)
    .definition(query)
    .refresh(VariableRefresh.OnTimeRangeChanged)
    .sort(VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue('.*')
    .current({ selected: true, text: ['All'], value: ['$__all'] });
}

export function serviceVariable(naming: Naming) {
  return labelVariable(
    VAR.SERVICE,
    'Service',
    serviceValues(naming),
    'The Prometheus job label: the scrape job name when Prometheus scrapes the app, service.namespace/service.name through OTLP.',
  );
}

export function routeVariable(naming: Naming) {
  return labelVariable(VAR.ROUTE, 'Route', routeValues(naming), 'The http.route label of the requests (the router template, never a raw path).');
}

export function jaegerDatasource() {
  return new DatasourceVariableBuilder(VAR.JAEGER).label('Jaeger').type('jaeger').current({ selected: true, text: 'Jaeger', value: PROVISIONED_UID.JAEGER });
}

export function textVariable(name: string, label: string, defaultValue: string, description: string) {
  return new TextBoxVariableBuilder(name)
    .label(label)
    .description(description)
    .defaultValue(defaultValue)
    .current({ selected: true, text: defaultValue, value: defaultValue });
}
