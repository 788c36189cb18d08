import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { benchChartSpec, COMPARED, readLatest } from '../../bench/chart.js';
import { panelsOf } from '../../dashboards/src/panel-queries.js';
import { dashboardPreviewSpec, legendOf, type DashboardPreview } from '../../scripts/pictures/dashboard-preview.js';
import { renderSvg } from '../../scripts/pictures/render-svg.js';
import { rowLabel, tracePictureSpec, type TracePicture } from '../../scripts/pictures/trace-picture.js';
import { svgTexts } from '../helpers/svg.js';

/**
 * The generators of docs/images/: each draws a well-formed SVG that shows the names it was given (a broken
 * generator fails here, on every run, without the servers the real pictures come from), and the committed
 * pictures are the ones the README and docs/ reference.
 */
const overview = JSON.parse(readFileSync(new URL('../../dashboards/idempotency-overview.json', import.meta.url), 'utf8')) as Dashboard;
const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

describe('bench chart (bench/chart.ts)', () => {
  it('draws throughput and added latency of every compared approach from bench/results/latest.json', async () => {
    const latest = readLatest();
    const texts = svgTexts(await renderSvg(benchChartSpec(latest)));
    for (const { label } of COMPARED) expect(texts).toContain(label);
    expect(texts).toEqual(expect.arrayContaining([`${latest.connections} connections`, 'p50', 'p99']));
    for (const connections of Object.keys(latest.byConnections)) expect(texts).toContain(`${connections} connections`);
    // The bar labels are the measured figures, e.g. the baseline's throughput.
    expect(texts).toContain(latest.scenarios.baseline!.rps.toLocaleString('en-US'));
  });
});

describe('dashboard preview (scripts/pictures/dashboard-preview.ts)', () => {
  it("draws one chart per panel of the overview, under the panel's title, with each series' legend", async () => {
    const preview: DashboardPreview = {
      title: overview.title!,
      subtitle: 'series made up for the test',
      durationSeconds: 10,
      panels: panelsOf(overview).map((panel, index) => ({
        title: panel.title!,
        type: panel.type,
        unit: panel.fieldConfig?.defaults?.unit,
        series: [
          {
            name: legendOf(undefined, { series_label: `series-${index}` }, 'A'),
            column: 'A',
            points: Array.from({ length: 10 }, (_, second) => [second, second * (index + 1)] as [number, number]),
          },
        ],
      })),
    };
    const texts = svgTexts(await renderSvg(dashboardPreviewSpec(preview)));
    for (const panel of preview.panels) expect(texts, panel.title).toContain(panel.title);
    const shown = preview.panels.filter((panel) => panel.type === 'timeseries' || panel.type === 'table' || panel.type === 'stat');
    expect(shown).toHaveLength(preview.panels.length);
    for (const panel of preview.panels.filter((candidate) => candidate.type === 'timeseries')) expect(texts).toContain(panel.series[0]!.name);
  });

  it('draws a text panel as its lines, a table of text cells, and a table without rows as "No data"', async () => {
    const preview: DashboardPreview = {
      title: 'traces',
      subtitle: 'panels made up for the test',
      durationSeconds: 60,
      panels: [
        { title: 'Reading these traces', type: 'text', series: [], content: 'Every span carries `idempotency.correlation_id`.' },
        { title: 'Replayed', type: 'table', series: [{ name: '0123456789abcdef', column: 'Trace name', text: 'payments: POST /payments', points: [] }] },
        { title: 'Conflicts', type: 'table', series: [] },
      ],
    };
    const texts = svgTexts(await renderSvg(dashboardPreviewSpec(preview)));
    expect(texts).toEqual(
      expect.arrayContaining(['Every span carries idempotency.correlation_id.', '0123456789abcdef', 'payments: POST /payments', 'Trace name', 'No data']),
    );
  });

  it("fills a legendFormat with the series' labels, as Grafana does", () => {
    expect(legendOf('{{idempotency_outcome}} p95', { idempotency_outcome: 'replayed' }, 'A')).toBe('replayed p95');
    expect(legendOf(undefined, {}, 'B')).toBe('B');
  });
});

describe('trace picture (scripts/pictures/trace-picture.ts)', () => {
  const picture: TracePicture = {
    title: 'a retry beside its original',
    subtitle: 'spans made up for the test',
    spans: [
      { trace: 'original', service: 'payments', name: 'POST /payments', startMs: 0, endMs: 40, spanId: 'o1' },
      { trace: 'original', service: 'ledger', name: 'POST /entries', startMs: 10, endMs: 30, spanId: 'o2' },
      { trace: 'retry', service: 'payments', name: 'POST /payments', startMs: 50, endMs: 55, spanId: 'r1' },
    ],
    events: [{ spanId: 'r1', name: 'idempotency.duplicate', detail: 'reason=replayed', atMs: 52 }],
    links: [{ fromSpanId: 'r1', toSpanId: 'o1', label: 'span link to the original server span' }],
  };

  it('draws every span on its row, the duplicate event and the link, labelled', async () => {
    const texts = svgTexts(await renderSvg(tracePictureSpec(picture)));
    expect(texts).toEqual(
      expect.arrayContaining([...picture.spans.map(rowLabel), 'idempotency.duplicate (reason=replayed)', 'span link to the original server span', 'ledger']),
    );
  });

  it('refuses an event on a span that is not in the picture, instead of drawing it nowhere', () => {
    expect(() => tracePictureSpec({ ...picture, events: [{ ...picture.events[0]!, spanId: 'missing' }] })).toThrow('no span missing');
  });
});

describe('the committed pictures', () => {
  const pictures = {
    'bench.svg': ['README.md', 'docs/performance.md'],
    'dashboard-overview.svg': ['README.md', 'docs/dashboards.md'],
    'dashboard-duplicate-traces.svg': ['docs/dashboards.md'],
    'duplicate-trace.svg': ['README.md', 'docs/telemetry.md'],
  };

  it.each(Object.entries(pictures))('docs/images/%s is well-formed and referenced by relative path from %j', (name, documents) => {
    expect(svgTexts(read(`docs/images/${name}`)).length).toBeGreaterThan(10);
    for (const document of documents) {
      const relative = document.startsWith('docs/') ? `images/${name}` : `docs/images/${name}`;
      expect(read(document), document).toContain(`(${relative})`);
    }
  });

  it('shows the request lifecycle and both modes as Mermaid diagrams in the README', () => {
    const diagrams = [...read('README.md').matchAll(/```mermaid\n([\s\S]*?)```/g)].map((match) => match[1]!);
    expect(diagrams.some((diagram) => diagram.startsWith('sequenceDiagram') && diagram.includes('409') && diagram.includes('422'))).toBe(true);
    expect(diagrams.some((diagram) => diagram.includes('transactional') && diagram.includes('lease'))).toBe(true);
    expect(existsSync(new URL('../../docs/images/', import.meta.url))).toBe(true);
  });
});
