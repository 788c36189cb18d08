import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { panelsOf, promQueries, substitute, variableQueries } from '../dashboards/src/panel-queries.js';
import { dashboardPreviewSpec } from '../scripts/pictures/dashboard-preview.js';
import { imageFile, renderSvg } from '../scripts/pictures/render-svg.js';
import type { PostgresStore } from '../src/entries/postgres.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { PROMETHEUS, startPrometheus, type PrometheusServer } from './dashboards-support/prometheus.js';
import { gatherPreview } from './dashboards-support/preview.js';
import { maybeUpdatePicture, svgTexts } from './helpers/svg.js';
import { createTrafficApp, holdClaim, ROUTES, sendMixedTraffic, serveMetrics, shortLivedKeys, type TrafficLog } from './dashboards-support/traffic.js';
import { recordsExpired } from './helpers/record-clock.js';

/**
 * The overview dashboard against a real Prometheus: the library's metrics, exported by the JS
 * PrometheusExporter and scraped every second, must give every panel query data. Needs the Prometheus 3
 * binary scripts/install-prometheus.sh builds, on import of its support module; skipped, saying why, without Go.
 */

const JOB = 'koa-idempotency-e2e';
const SCRAPE_INTERVAL_SECONDS = 1;
const HELD_CLAIM_MS = 2_500;

/** What Grafana would put in the queries for this short run: the rate window spans the whole run. */
const MACROS = {
  __rate_interval: '1m',
  __range: '5m',
  service: JOB,
  // The concrete routes rather than "All" (`.*`), so a series that lost its route label returns nothing.
  route: Object.values(ROUTES).join('|'),
};

/** The overview as committed (test/unit/dashboards.test.ts checks it is what the generator writes). */
const overview = JSON.parse(readFileSync(new URL('../dashboards/idempotency-overview.json', import.meta.url), 'utf8')) as Dashboard;
const database = POSTGRES_SERVER;

describe.skipIf(!PROMETHEUS.binary)(
  PROMETHEUS.binary ? 'Overview dashboard on a real Prometheus' : `Overview dashboard on a real Prometheus (skipped: ${PROMETHEUS.skipReason})`,
  () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let app: Awaited<ReturnType<typeof serve>>;
    let exporter: Awaited<ReturnType<typeof serveMetrics>>;
    let prometheus: PrometheusServer;
    const traffic: TrafficLog = {};
    let trafficStartMs: number;

    beforeAll(async () => {
      db = await database.open('dashboards_e2e');
      store = await db.store({ sweepIntervalMs: 0 });
      exporter = await serveMetrics(JOB);
      app = await serve(createTrafficApp(store));
      prometheus = await startPrometheus({ scrape: { job: JOB, target: exporter.target, scrapeIntervalSeconds: SCRAPE_INTERVAL_SECONDS, histograms: 'classic' } });
      await prometheus.scrapedAfter(Date.now());
      trafficStartMs = Date.now();

      // Two rounds with scrapes in between, so every counter is seen before and after it grows.
      for (const round of [1, 2]) {
        await sendMixedTraffic(app.url, round, traffic);
        const held = holdClaim(app.url, round, HELD_CLAIM_MS);
        await recordsExpired(db.sql, `"${db.schema}".idempotency_records`, shortLivedKeys(round)); // ttlSeconds: 1
        await store.sweep();
        await prometheus.scrapedAfter(Date.now());
        traffic.held = [...(traffic.held ?? []), (await held).status];
      }
      await prometheus.scrapedAfter(Date.now());
    }, 90_000);

    afterAll(async () => {
      await prometheus?.stop();
      await app?.close();
      await exporter?.close();
      await db?.close();
    });

    it('sent the traffic it meant to: executions, replays, a mismatch, a conflict, a wait, a missing key', () => {
      expect(traffic).toMatchObject({
        execute: Array(6).fill(201),
        replay: Array(6).fill(201),
        mismatch: [422, 422],
        'missing key': [400, 400],
        'slow + conflict': [201, 409, 201, 409],
        'slow + wait': [201, 201, 201, 201],
        'short-lived': [201, 201, 201, 201],
        held: [201, 201],
      });
    });

    it.each(promQueries(overview).map((query) => [`${query.panel} / ${query.refId}`, query] as const))('returns data for "%s"', async (_name, query) => {
      const expr = substitute(query.expr, MACROS);
      const now = await prometheus.query(expr);
      // Every panel moved during the run: its largest value over the run is positive (a 0 or NaN
      // everywhere would mean a label or an outcome that never matched).
      const peaks = await prometheus.query(`max_over_time((${expr})[2m:1s])`);
      const show = (samples: typeof now) => JSON.stringify(samples.map((sample) => [sample.metric, Number(Number(sample.value[1]).toPrecision(3))]));
      console.info(`[${query.panel} / ${query.refId}] ${expr}\n  now:  ${show(now)}\n  peak: ${show(peaks)}`);
      expect(now.length, expr).toBeGreaterThan(0);
      expect(Math.max(...peaks.map((sample) => Number(sample.value[1])).filter((value) => !Number.isNaN(value))), expr).toBeGreaterThan(0);
    });

    it('draws every panel, under its title, with the series it returned, into the preview docs/images/dashboard-overview.svg', async () => {
      const preview = await gatherPreview(prometheus, overview, {
        macros: MACROS,
        startMs: trafficStartMs - 2_000,
        endMs: Date.now(),
        subtitle: 'After the demo traffic of test/dashboards-e2e.test.ts: every panel query run on a real Prometheus scraping every second',
      });
      const svg = await renderSvg(dashboardPreviewSpec(preview));
      const texts = svgTexts(svg);
      for (const panel of panelsOf(overview)) expect(texts, panel.title).toContain(panel.title);
      expect(preview.panels.filter((panel) => panel.series.length === 0).map((panel) => panel.title)).toEqual([]);
      // Legends and table rows: the outcomes and routes the traffic produced.
      expect(texts).toEqual(expect.arrayContaining(['executed', 'replayed', 'in_progress', 'key_reused', ROUTES.ORDERS, 'Duplicates']));
      maybeUpdatePicture(imageFile('dashboard-overview.svg'), svg);
    });

    it('lists the service and every route in the variables', async () => {
      const [service, route] = variableQueries(overview);
      const services = await prometheus.series(substitute(service!.selector, MACROS));
      expect(new Set(services.map((series) => series[service!.label]))).toEqual(new Set([JOB]));
      const routes = await prometheus.series(substitute(route!.selector, MACROS));
      expect(new Set(routes.map((series) => series[route!.label]))).toEqual(new Set(Object.values(ROUTES)));
    });
  },
);
