import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metrics } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { VariableType, type Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { BUNDLED_DASHBOARDS, serialize } from '../../dashboards/src/dashboards.js';
import { panelsOf, promQueries, substitute, variableQueries } from '../../dashboards/src/panel-queries.js';
import { pipelineNames, SERIES, type Pipeline } from '../../dashboards/src/prometheus-names.js';
import { PROVISIONED_UID, VAR } from '../../dashboards/src/variables.js';
import { METRIC } from '../../src/entries/otel.js';
import { libraryInstruments, resetInstruments } from '../../src/telemetry/metrics.js';
import { analyse, nameMatches } from '../dashboards-support/promql.js';

/** Each dashboard as it is committed (JSON: no builder methods left on the objects). */
const dashboards = BUNDLED_DASHBOARDS.map(({ file, build }) => ({ file, dashboard: JSON.parse(serialize(build())) as Dashboard }));
const overview = dashboards.find(({ file }) => file === 'idempotency-overview.json')!.dashboard;
const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** Every PromQL a dashboard runs: panel queries and the selectors of its `label_values()` variables. */
function allPromql(dashboard: Dashboard): Array<{ where: string; expr: string }> {
  return [
    ...promQueries(dashboard).map((query) => ({ where: `${query.panel} / ${query.refId}`, expr: query.expr })),
    ...variableQueries(dashboard).map((variable) => ({ where: `variable ${variable.name}`, expr: variable.selector })),
  ];
}

/** Seconds in a Prometheus duration such as `15s` or `1m`. */
function seconds(duration: string): number {
  const match = /^(\d+)(s|m)$/.exec(duration);
  if (!match) throw new Error(`unsupported duration: ${duration}`);
  return Number(match[1]) * (match[2] === 'm' ? 60 : 1);
}

/** Values for every macro and variable a query may hold, as Grafana would substitute them. */
const MACROS = { __rate_interval: '1m', __range: '1h', [VAR.SERVICE]: '.*', [VAR.ROUTE]: '.*' };

describe('bundled dashboards', () => {
  it.each(dashboards.map(({ file, dashboard }) => [file, dashboard] as const))('commits dashboards/%s as `npm run dashboards` generates it', (file, dashboard) => {
    expect(read(`dashboards/${file}`), 'stale JSON: run `npm run dashboards` and commit the result').toBe(serialize(dashboard));
  });

  it('gives every panel a unique id and every dashboard a unique uid', () => {
    for (const { dashboard } of dashboards) {
      const ids = (dashboard.panels ?? []).map((panel) => panel.id);
      expect(new Set(ids).size).toBe(ids.length);
    }
    expect(new Set(dashboards.map(({ dashboard }) => dashboard.uid)).size).toBe(dashboards.length);
  });
});

/** The JSON Schemas of the Grafana model, vendored unchanged from grafana/grafana-foundation-sdk (source and license: README.md there). */
const schemaDir = new URL('../fixtures/grafana-schema/', import.meta.url);

describe('Grafana schema', () => {
  const schema = (name: string) => JSON.parse(readFileSync(new URL(`${name}.jsonschema.json`, schemaDir), 'utf8')) as SchemaFile;
  type SchemaFile = { definitions: Record<string, { properties: Record<string, object> }> };
  /**
   * The Grafana model types these two as `any` (the SDK's TypeScript says so, and Grafana writes
   * `{ id: 'byName', options: 'Duplicates' }` and `{ id: 'unit', value: 'percentunit' }`); the JSON Schema
   * export narrowed `any` to `object`, which would refuse every field override Grafana itself saves.
   */
  const dashboardSchema = schema('dashboard');
  dashboardSchema.definitions.MatcherConfig!.properties.options = {};
  dashboardSchema.definitions.DynamicConfigValue!.properties.value = {};
  const PANEL_SCHEMAS = ['timeseries', 'stat', 'table'];
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema(dashboardSchema, 'dashboard');
  for (const name of ['prometheus', ...PANEL_SCHEMAS]) ajv.addSchema(schema(name), name);
  const validate = (ref: string, value: unknown) => {
    const check = ajv.getSchema(ref)!;
    return check(value) ? [] : (check.errors ?? []).map((error) => `${error.instancePath} ${error.message} ${JSON.stringify(error.params)}`);
  };

  it.each(dashboards.map(({ file, dashboard }) => [file, dashboard] as const))('validates %s as a dashboard', (_file, dashboard) => {
    expect(validate('dashboard', dashboard)).toEqual([]);
  });

  it.each(dashboards.map(({ file, dashboard }) => [file, dashboard] as const))("validates the options and field config of %s's panels", (_file, dashboard) => {
    const checked = panelsOf(dashboard).filter((panel) => PANEL_SCHEMAS.includes(panel.type));
    for (const panel of checked) {
      expect(validate(`${panel.type}#/definitions/Options`, panel.options), panel.title).toEqual([]);
      if (ajv.getSchema(`${panel.type}#/definitions/FieldConfig`)) {
        expect(validate(`${panel.type}#/definitions/FieldConfig`, panel.fieldConfig?.defaults?.custom ?? {}), panel.title).toEqual([]);
      }
    }
    // Only the text panel has no schema here; a new panel type must bring one.
    expect(
      panelsOf(dashboard)
        .filter((panel) => !PANEL_SCHEMAS.includes(panel.type))
        .map((panel) => panel.type),
    ).toEqual(
      panelsOf(dashboard)
        .filter((panel) => panel.type === 'text')
        .map(() => 'text'),
    );
  });

  it('validates every Prometheus query', () => {
    const targets = dashboards.flatMap(({ dashboard }) => panelsOf(dashboard).flatMap((panel) => panel.targets ?? []));
    const prometheus = targets.filter((target) => (target as { datasource?: { type?: string } }).datasource?.type === 'prometheus');
    expect(prometheus.length).toBeGreaterThan(10);
    for (const target of prometheus) expect(validate('prometheus', target)).toEqual([]);
  });

  it('builds Jaeger searches the Jaeger datasource accepts: a service, logfmt tags, one query per panel', () => {
    const jaegerPanels = dashboards.flatMap(({ dashboard }) => panelsOf(dashboard)).filter((panel) => panel.datasource?.type === 'jaeger');
    expect(jaegerPanels.length).toBe(4);
    for (const panel of jaegerPanels) {
      expect(panel.targets).toHaveLength(1);
      const target = panel.targets![0] as unknown as Record<string, unknown>;
      expect(Object.keys(target).sort()).toEqual(['datasource', 'limit', 'queryType', 'refId', 'service', 'tags']);
      expect(target).toMatchObject({ queryType: 'search', service: `$${VAR.JAEGER_SERVICE}`, datasource: { type: 'jaeger', uid: `\${${VAR.JAEGER}}` } });
      expect(target.tags).toMatch(/^idempotency\.[a-z_]+=\S+$/);
      expect(panel.fieldConfig?.defaults?.links?.[0]?.url).toBe(`$${VAR.JAEGER_URL}/trace/\${__data.fields.traceID}`);
    }
  });
});

describe('datasources', () => {
  const datasources = (parseYaml(read('dashboards/provisioning/datasources.yaml')) as { datasources: Array<Record<string, unknown>> }).datasources;
  const providers = (parseYaml(read('dashboards/provisioning/dashboards.yaml')) as { providers: Array<Record<string, unknown>> }).providers;

  it.each(dashboards.map(({ file }) => [file] as const))('are template variables in %s, never __inputs or a fixed uid', (file) => {
    const json = read(`dashboards/${file}`);
    expect(json).not.toContain('__inputs');
    const uids = [...json.matchAll(/"uid": "([^"]*)"/g)].map((match) => match[1]);
    const dashboardUid = dashboards.find((entry) => entry.file === file)!.dashboard.uid;
    expect(uids.filter((uid) => uid !== dashboardUid).every((uid) => uid === `\${${VAR.DATASOURCE}}` || uid === `\${${VAR.JAEGER}}`)).toBe(true);
  });

  it('preselect the uids that provisioning/datasources.yaml defines, with the URLs of the compose services', () => {
    const variables = dashboards.flatMap(({ dashboard }) => dashboard.templating?.list ?? []).filter((variable) => variable.type === VariableType.Datasource);
    const preselected = new Map(variables.map((variable) => [variable.query as string, (variable.current?.value as string) ?? '']));
    expect(Object.fromEntries(preselected)).toEqual({ prometheus: PROVISIONED_UID.PROMETHEUS, jaeger: PROVISIONED_UID.JAEGER });
    expect(datasources.map(({ uid, type, url }) => ({ uid, type, url }))).toEqual([
      { uid: PROVISIONED_UID.PROMETHEUS, type: 'prometheus', url: 'http://prometheus:9090' },
      { uid: PROVISIONED_UID.JAEGER, type: 'jaeger', url: 'http://jaeger:16686' },
    ]);
  });

  const composePrometheus = 'examples/compose/prometheus.yml';
  it(`set a timeInterval no shorter than the scrape intervals of ${composePrometheus}`, () => {
    // $__rate_interval is at least 4 x timeInterval: with timeInterval >= the real scrape interval, every rate() window holds 4 scrapes.
    const config = parseYaml(read(composePrometheus)) as { global?: { scrape_interval?: string }; scrape_configs?: Array<{ scrape_interval?: string }> };
    const intervals = [config.global?.scrape_interval ?? '1m', ...(config.scrape_configs ?? []).flatMap((job) => job.scrape_interval ?? [])].map(seconds);
    const timeInterval = seconds((datasources[0]!.jsonData as { timeInterval: string }).timeInterval);
    for (const interval of intervals) expect(interval).toBeLessThanOrEqual(timeInterval);
  });

  it('provision the dashboards from one file provider', () => {
    expect(providers).toHaveLength(1);
    expect(providers[0]).toMatchObject({ type: 'file', options: { path: '/var/lib/grafana/dashboards/koa-idempotency' } });
  });
});

describe('PromQL', () => {
  const queries = dashboards.flatMap(({ dashboard }) => allPromql(dashboard));

  it('covers the overview: 15 panel queries and 2 variables', () => {
    expect(promQueries(overview)).toHaveLength(15);
    expect(variableQueries(overview).map((variable) => variable.name)).toEqual([VAR.SERVICE, VAR.ROUTE]);
  });

  it.each(queries.map(({ where, expr }) => [where, expr] as const))('parses "%s" with no error node', (_where, expr) => {
    expect(analyse(substitute(expr, MACROS)).errors).toEqual([]);
  });

  it('rate() windows are $__rate_interval, range tables are $__range', () => {
    for (const { expr } of queries) {
      for (const [, window] of expr.matchAll(/\[([^\]]+)\]/g)) expect(['$__rate_interval', '$__range']).toContain(window);
    }
  });

  it('detects a broken query (the check can fail)', () => {
    expect(analyse('sum(rate(x[5m])').errors).not.toEqual([]);
    expect(() => substitute('rate(x[$__interval])', MACROS)).toThrow(/__interval/);
  });
});

describe('metric names', () => {
  /** What the JS PrometheusExporter really exposes for the library's instruments. */
  let exposed: { families: string[]; samples: Set<string> };

  beforeAll(async () => {
    const exporter = new PrometheusExporter({ preventServerStart: true });
    const provider = new MeterProvider({ readers: [exporter] });
    metrics.setGlobalMeterProvider(provider);
    resetInstruments();
    for (const instrument of Object.values(libraryInstruments())) {
      if ('record' in instrument) instrument.record(0.01);
      else instrument.add(1);
    }
    const { resourceMetrics } = await exporter.collect();
    const text = new PrometheusSerializer().serialize(resourceMetrics);
    await provider.shutdown();
    const families = [...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1]!).filter((name) => name !== 'target_info');
    const samples = new Set([...text.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/gm)].map((match) => match[1]!));
    exposed = { families, samples };
  });
  afterAll(() => {
    metrics.disable();
    resetInstruments();
  });

  /** Each overview and the pipelines whose names it reads (prometheus-names.ts), each with classic and native histograms. */
  const overviews = [
    { file: 'idempotency-overview.json', pipelines: ['js-exporter', 'otlp'] },
    { file: 'idempotency-overview-utf8.json', pipelines: ['otlp-no-translation'] },
  ] as const;
  const namesOf = (pipeline: Pipeline, histograms: 'classic' | 'native') => Object.values(SERIES).flatMap((series) => pipelineNames(series, pipeline, histograms));
  const selectorsOf = (file: string) =>
    allPromql(dashboards.find((entry) => entry.file === file)!.dashboard).map(({ where, expr }) => ({
      where,
      names: analyse(substitute(expr, MACROS)).selectors.map((selector) => selector.name),
    }));

  it('reads only instruments defined in METRIC', () => {
    const defined = new Set<string>(Object.values(METRIC));
    for (const series of Object.values(SERIES)) expect(defined).toContain(series.instrument);
  });

  it.each(
    overviews.flatMap(({ file, pipelines }) =>
      pipelines.flatMap((pipeline) => (['classic', 'native'] as const).map((histograms) => [file, pipeline, histograms] as const)),
    ),
  )('gives every query of %s a selector that names a series of the %s pipeline with %s histograms', (file, pipeline, histograms) => {
    const produced = namesOf(pipeline, histograms);
    for (const { where, names } of selectorsOf(file)) {
      expect(
        names.some((name) => produced.some((sample) => nameMatches(name, sample))),
        `${where}: ${JSON.stringify(names)}`,
      ).toBe(true);
    }
  });

  it.each(overviews.map(({ file, pipelines }) => [file, pipelines] as const))(
    'names, in every selector of %s, a series one of its pipelines produces',
    (file, pipelines) => {
      const produced = pipelines.flatMap((pipeline) => [...namesOf(pipeline, 'classic'), ...namesOf(pipeline, 'native')]);
      for (const { where, names } of selectorsOf(file)) {
        for (const name of names)
          expect(
            produced.some((sample) => nameMatches(name, sample)),
            `${where}: ${JSON.stringify(name)}`,
          ).toBe(true);
      }
    },
  );

  it('shows every metric the library exposes on the overview', () => {
    const overviewSelectors = allPromql(overview).flatMap(({ expr }) => analyse(substitute(expr, MACROS)).selectors);
    const shown = exposed.families.filter((family) =>
      overviewSelectors.some(({ name }) => ['', '_total', '_bucket', '_count'].some((suffix) => nameMatches(name, `${family}${suffix}`))),
    );
    expect(exposed.families.length).toBe(Object.keys(METRIC).length);
    expect(shown).toEqual(exposed.families);
  });

  it('matches the names of every pipeline for each kind of instrument', () => {
    expect(pipelineNames(SERIES.requests, 'js-exporter')).toEqual(['idempotency_requests_total']);
    expect(pipelineNames(SERIES.requests, 'otlp-no-translation')).toEqual(['idempotency.requests']);
    expect(pipelineNames(SERIES.requestDuration, 'otlp-no-translation')).toContain('idempotency.request.duration_bucket');
    expect(pipelineNames(SERIES.requestDuration, 'otlp', 'native')).toEqual(['idempotency_request_duration_seconds']);
    expect(pipelineNames(SERIES.requestDuration, 'js-exporter', 'native')).toEqual(['idempotency_request_duration']);
    expect(pipelineNames(SERIES.requests, 'otlp')).toEqual(['idempotency_requests_total']);
    expect(pipelineNames(SERIES.requestDuration, 'js-exporter')).toContain('idempotency_request_duration_bucket');
    expect(pipelineNames(SERIES.requestDuration, 'otlp')).toContain('idempotency_request_duration_seconds_bucket');
    expect(pipelineNames(SERIES.activeRequests, 'otlp')).toEqual(['idempotency_active_requests']);
    for (const series of Object.values(SERIES)) {
      for (const name of pipelineNames(series, 'js-exporter')) expect(exposed.samples, name).toContain(name);
    }
  });
});
