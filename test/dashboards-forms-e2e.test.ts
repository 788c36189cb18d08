import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { AggregationType, InstrumentType, PeriodicExportingMetricReader, type AggregationOption } from '@opentelemetry/sdk-metrics';
import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { BUNDLED_DASHBOARDS, serialize } from '../dashboards/src/dashboards.js';
import { panelsOf, substitute, variableQueries } from '../dashboards/src/panel-queries.js';
import { ESCAPED, pipelineNames, SERIES, UTF8, type Naming, type Pipeline } from '../dashboards/src/prometheus-names.js';
import { legendOf } from '../scripts/pictures/dashboard-preview.js';
import type { PostgresStore } from '../src/entries/postgres.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { PROMETHEUS, PROMETHEUS_RELEASE, startPrometheus, type PrometheusServer, type PrometheusSource } from './dashboards-support/prometheus.js';
import { createTrafficApp, holdClaim, ROUTES, sendMixedTraffic, serveMetrics, shortLivedKeys, type TrafficLog } from './dashboards-support/traffic.js';
import { recordsExpired } from './helpers/record-clock.js';

/**
 * The overview dashboards on a real Prometheus 3 in each form the library's metrics reach it (issue 26): scraped
 * with classic histograms (the reference), scraped into native histograms with custom buckets, and pushed over
 * OTLP to Prometheus' receiver as exponential (native) histograms, with escaped names and with `NoTranslation`
 * (dotted names). One app and one traffic feed all five servers at once; every panel query of the dashboard for
 * the form's naming must return the series the reference returns, with the same values.
 */

const JOB = 'koa-idempotency-forms';
/** Short, so the scraped forms' first and last samples lie close to the window's edges (see RATE_TOLERANCE). */
const SCRAPE_INTERVAL_SECONDS = 0.5;
const HELD_CLAIM_MS = 2_500;
/**
 * Rates and increases: each form's window runs from its first sample after round 1 to its last, so each counts the
 * same growth without extrapolating, but over a duration up to a scrape interval longer or shorter than another's
 * (about 13 s). Quantiles of classic and custom-bucket histograms come out the same.
 */
const RATE_TOLERANCE = 0.15;
/**
 * Quantiles from exponential histograms: the reference interpolates linearly inside its bucket, the exponential
 * histogram inside far narrower ones. The widest step between two of the library's bucket bounds is 2.5x.
 */
const EXPONENTIAL_QUANTILE_FACTOR = 2.5;

const VARIABLES = { service: JOB, route: Object.values(ROUTES).join('|') };

interface Form {
  name: string;
  naming: Naming;
  source: PrometheusSource;
  /** OTLP forms: the histograms the SDK exports (explicit buckets are the SDK default). */
  exponential?: boolean;
  /** The names the form stores, as prometheus-names.ts documents them. */
  names: { pipeline: Pipeline; histograms: 'classic' | 'native' };
}

const scrape = (histograms: 'classic' | 'nhcb'): PrometheusSource => ({ scrape: { job: JOB, target: '', scrapeIntervalSeconds: SCRAPE_INTERVAL_SECONDS, histograms } });
const FORMS: readonly Form[] = [
  { name: 'scraped, classic histograms', naming: ESCAPED, source: scrape('classic'), names: { pipeline: 'js-exporter', histograms: 'classic' } },
  { name: 'scraped, native histograms with custom buckets', naming: ESCAPED, source: scrape('nhcb'), names: { pipeline: 'js-exporter', histograms: 'native' } },
  {
    name: 'OTLP receiver, exponential native histograms',
    naming: ESCAPED,
    source: { otlp: { translationStrategy: 'UnderscoreEscapingWithSuffixes' } },
    exponential: true,
    names: { pipeline: 'otlp', histograms: 'native' },
  },
  {
    name: 'OTLP receiver, NoTranslation (dotted names), classic histograms',
    naming: UTF8,
    source: { otlp: { translationStrategy: 'NoTranslation' } },
    names: { pipeline: 'otlp-no-translation', histograms: 'classic' },
  },
  {
    name: 'OTLP receiver, NoTranslation (dotted names), exponential native histograms',
    naming: UTF8,
    source: { otlp: { translationStrategy: 'NoTranslation' } },
    exponential: true,
    names: { pipeline: 'otlp-no-translation', histograms: 'native' },
  },
];
const REFERENCE = FORMS[0]!;

const overviewFor = (naming: Naming): Dashboard => JSON.parse(serialize(BUNDLED_DASHBOARDS.find((entry) => entry.naming === naming.id)!.build())) as Dashboard;

/** Every panel query, in panel order (the same in both namings), with what names its series; `window` for both macros. */
function panelQueries(dashboard: Dashboard, window: string) {
  const macros = { ...VARIABLES, __rate_interval: window, __range: window };
  return panelsOf(dashboard).flatMap((panel) =>
    ((panel.targets ?? []) as Array<{ refId?: string; expr?: string; legendFormat?: string }>).map((target) => ({
      id: `${panel.title} / ${target.refId}`,
      expr: substitute(target.expr!, macros),
      legend: target.legendFormat,
    })),
  );
}

const exponentialHistograms = (type: InstrumentType): AggregationOption =>
  type === InstrumentType.HISTOGRAM ? { type: AggregationType.EXPONENTIAL_HISTOGRAM } : { type: AggregationType.DEFAULT };

/** Series name -> value, as Grafana would label them (a table row by its labels' values). */
type Answer = Record<string, number>;
const seriesName = (legend: string | undefined, labels: Record<string, string>) => (legend ? legendOf(legend, labels, '') : Object.values(labels).join(' '));

const database = POSTGRES_SERVER;

describe.skipIf(!PROMETHEUS.binary)(
  PROMETHEUS.binary
    ? `Overview dashboards on a real Prometheus ${PROMETHEUS_RELEASE}: native histograms and dotted OTLP names`
    : `Overview dashboards on Prometheus 3 (skipped: ${PROMETHEUS.skipReason})`,
  () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let app: Awaited<ReturnType<typeof serve>>;
    let metricsServer: Awaited<ReturnType<typeof serveMetrics>>;
    const servers = new Map<Form, PrometheusServer>();
    const answers = new Map<Form, Map<string, Answer>>();
    const traffic: TrafficLog = {};

    /** Every server holds a sample taken after this call began: OTLP forms by a flush, scraped ones by a scrape. */
    async function sampleEverywhere(): Promise<void> {
      const sinceMs = Date.now();
      await metricsServer.flush();
      await Promise.all(FORMS.filter((form) => 'scrape' in form.source).map((form) => servers.get(form)!.scrapedAfter(sinceMs)));
    }

    beforeAll(async () => {
      db = await database.open('dashboards_forms');
      store = await db.store({ sweepIntervalMs: 0 });
      const pushers: PeriodicExportingMetricReader[] = [];
      for (const form of FORMS.filter((candidate) => 'otlp' in candidate.source)) {
        const server = await startPrometheus(form.source);
        servers.set(form, server);
        const exporter = new OTLPMetricExporter({ url: server.otlpMetricsUrl, ...(form.exponential ? { aggregationPreference: exponentialHistograms } : {}) });
        pushers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 1_000 }));
      }
      metricsServer = await serveMetrics(JOB, pushers);
      for (const form of FORMS.filter((candidate) => 'scrape' in candidate.source)) {
        const { scrape: config } = form.source as Extract<PrometheusSource, { scrape: unknown }>;
        servers.set(form, await startPrometheus({ scrape: { ...config, target: metricsServer.target } }));
      }
      app = await serve(createTrafficApp(store));
      await sampleEverywhere();

      // Round 1 creates every series. The windows the queries are evaluated over start when the traffic of round 1 has
      // ended (below): the first sample each server holds inside has the values round 1 left, and every form counts
      // the growth of rounds 2 to 4 from there (a sample taken during round 1 would count part of it). Three
      // rounds, so a histogram that gets one observation a round (sweeps, waits) has an odd count in the window: with
      // an even count the median falls on a bucket edge, anywhere between the two middle observations, and each
      // form picks another point of that gap.
      let roundOneEndMs = 0;
      for (const round of [1, 2, 3, 4]) {
        await sendMixedTraffic(app.url, round, traffic);
        const held = holdClaim(app.url, round, HELD_CLAIM_MS);
        await recordsExpired(db.sql, `"${db.schema}".idempotency_records`, shortLivedKeys(round)); // ttlSeconds: 1
        await store.sweep();
        traffic.held = [...(traffic.held ?? []), (await held).status];
        if (round === 1) roundOneEndMs = Date.now();
        await sampleEverywhere();
      }

      for (const form of FORMS) {
        // Prometheus extrapolates a rate from the window's first and last samples to its edges, each classic bucket
        // series on its own (clamped where it would fall below zero), which skews a quantile of a few observations.
        // So the window is exactly the form's samples from the end of round 1 to the last: (first - 1 ms, last].
        const times = await servers.get(form)!.sampleTimes(`{__name__=~"idempotency[._]requests(_total)?"}`);
        const firstS = times.find((timeS) => timeS * 1000 >= roundOneEndMs)!;
        const lastS = times.at(-1)!;
        const byQuery = new Map<string, Answer>();
        for (const query of panelQueries(overviewFor(form.naming), `${Math.round((lastS - firstS) * 1000) + 1}ms`)) {
          const samples = await servers.get(form)!.query(query.expr, lastS);
          byQuery.set(query.id, Object.fromEntries(samples.map((sample) => [seriesName(query.legend, sample.metric), Number(sample.value[1])])));
        }
        answers.set(form, byQuery);
      }
    }, 180_000);

    afterAll(async () => {
      await Promise.all([...servers.values()].map((server) => server.stop()));
      await app?.close();
      await metricsServer?.close();
      await db?.close();
    });

    it('sent the traffic of four rounds: executions, replays, reused keys, in-progress duplicates, waits', () => {
      expect(traffic).toMatchObject({
        execute: Array(12).fill(201),
        mismatch: Array(4).fill(422),
        'slow + conflict': Array(4).fill([201, 409]).flat(),
        'slow + wait': Array(8).fill(201),
        held: Array(4).fill(201),
      });
    });

    it.each(FORMS.map((form) => [form.name, form] as const))('stores the names prometheus-names.ts gives its pipeline when %s', async (_name, form) => {
      const stored = await servers.get(form)!.series('{__name__=~"idempotency[._].+"}');
      const expected = Object.values(SERIES).flatMap((series) => pipelineNames(series, form.names.pipeline, form.names.histograms));
      expect(new Set(stored.map((series) => series.__name__))).toEqual(new Set(expected));
    });

    it('the reference form answers every panel query with data', () => {
      for (const [id, answer] of answers.get(REFERENCE)!) {
        expect(Object.keys(answer).length, id).toBeGreaterThan(0);
        expect(
          Object.values(answer).some((value) => value > 0 || id.startsWith('In flight')),
          `${id}: ${JSON.stringify(answer)}`,
        ).toBe(true);
      }
    });

    it.each(FORMS.filter((form) => form !== REFERENCE).map((form) => [form.name, form] as const))(
      'answers every panel query as the reference does when %s',
      (_name, form) => {
        const reference = answers.get(REFERENCE)!;
        for (const [id, answer] of answers.get(form)!) {
          const expected = reference.get(id)!;
          console.info(`[${form.name}] ${id}\n  got:       ${JSON.stringify(answer)}\n  reference: ${JSON.stringify(expected)}`);
          expect(Object.keys(answer).sort(), id).toEqual(Object.keys(expected).sort());
          for (const [series, value] of Object.entries(answer)) {
            const want = expected[series]!;
            if (Number.isNaN(want)) expect(value, `${id} ${series}`).toBeNaN();
            else if (id.match(/latency|Wait time/i) && form.exponential) {
              expect(value, `${id} ${series}`).toBeGreaterThanOrEqual(want / EXPONENTIAL_QUANTILE_FACTOR);
              expect(value, `${id} ${series}`).toBeLessThanOrEqual(want * EXPONENTIAL_QUANTILE_FACTOR);
            } else expect(Math.abs(value - want), `${id} ${series}: ${value} vs ${want}`).toBeLessThanOrEqual(RATE_TOLERANCE * Math.abs(want));
          }
        }
      },
    );

    it.each(FORMS.map((form) => [form.name, form] as const))('lists the service and every route in the variables when %s', async (_name, form) => {
      const [service, route] = variableQueries(overviewFor(form.naming));
      const services = await servers.get(form)!.series(substitute(service!.selector, VARIABLES));
      expect(new Set(services.map((series) => series[service!.label]))).toEqual(new Set([JOB]));
      const routes = await servers.get(form)!.series(substitute(route!.selector, VARIABLES));
      expect(new Set(routes.map((series) => series[route!.label]))).toEqual(new Set(Object.values(ROUTES)));
    });
  },
);
