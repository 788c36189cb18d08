import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TopLevelSpec } from 'vega-lite';
import { imageFile, renderSvg, writeSvg } from '../scripts/pictures/render-svg.js';

/**
 * The benchmark as a picture (docs/images/bench.svg): throughput and the latency each approach adds over the bare
 * app, from bench/results/latest.json. `npm run bench` redraws it after a full run; `npm run bench:chart` alone.
 */

interface ScenarioSummary {
  rps: number;
  p50Ms: number;
  p99Ms: number;
}
export interface LatestResults {
  connections: number;
  scenarios: Record<string, ScenarioSummary>;
  byConnections: Record<string, { scenarios: Record<string, ScenarioSummary> }>;
  latencyC1: { baseline: number; transactional: number; handwritten: number; addedMs: number };
}

/** The compared approaches, top to bottom, as the README's performance table names them. */
export const COMPARED: ReadonlyArray<{ scenario: string; label: string }> = [
  { scenario: 'baseline', label: 'no idempotency (baseline)' },
  { scenario: 'transactional', label: 'koa-idempotency, transactional' },
  { scenario: 'lease', label: 'koa-idempotency, lease' },
  { scenario: 'handwritten', label: 'hand-written SQL, transactional' },
  { scenario: 'handwrittenLease', label: 'hand-written SQL, lease' },
  { scenario: 'naive', label: 'naive check (SELECT, run, INSERT)' },
];
const ORDER = COMPARED.map((compared) => compared.label);

export function benchChartSpec(latest: LatestResults): TopLevelSpec {
  const runs: Array<[string, Record<string, ScenarioSummary>]> = [
    [String(latest.connections), latest.scenarios],
    ...Object.entries(latest.byConnections).map(([connections, run]) => [connections, run.scenarios] as [string, Record<string, ScenarioSummary>]),
  ];
  const throughput = runs.flatMap(([connections, scenarios]) =>
    COMPARED.map(({ scenario, label }) => ({ label, series: `${connections} connections`, value: scenarios[scenario]!.rps })),
  );
  const baseline = latest.scenarios.baseline!;
  const added = COMPARED.flatMap(({ scenario, label }) => [
    { label, series: 'p50', value: round(latest.scenarios[scenario]!.p50Ms - baseline.p50Ms) },
    { label, series: 'p99', value: round(latest.scenarios[scenario]!.p99Ms - baseline.p99Ms) },
  ]);
  const { baseline: c1Baseline, transactional: c1Transactional, handwritten: c1Handwritten } = latest.latencyC1;
  return {
    title: {
      text: 'koa-idempotency against a hand-written reference, a naive check and no idempotency at all',
      subtitle: [
        'A POST that inserts a row in Postgres, each request with a fresh Idempotency-Key (bench/results/latest.json).',
        `One request at a time, p50: baseline ${c1Baseline} ms, koa-idempotency transactional ${c1Transactional} ms, hand-written ${c1Handwritten} ms.`,
      ],
    },
    hconcat: [
      barChart('Throughput (requests/s, higher is better)', throughput, 'requests/s'),
      barChart(`Latency added over the baseline, ${latest.connections} connections (ms, lower is better)`, added, 'ms'),
    ],
    resolve: { scale: { color: 'independent' } },
  };
}

/** One chart of an `hconcat`, as vega-lite's public types spell it. */
type ConcatPart = Extract<TopLevelSpec, { hconcat: unknown }>['hconcat'][number];

function barChart(title: string, values: Array<{ label: string; series: string; value: number }>, unit: string): ConcatPart {
  // Series in the order of the data (8 before 32 connections, p50 before p99), not alphabetical.
  const series = [...new Set(values.map((value) => value.series))];
  return {
    title,
    width: 300,
    height: 300,
    data: { values },
    encoding: {
      // labelLimit 0: headless text measurement overestimates widths and would cut the labels short.
      y: { field: 'label', type: 'nominal', sort: ORDER, title: null, axis: { labelLimit: 0 } },
      yOffset: { field: 'series', type: 'nominal', sort: series },
      x: { field: 'value', type: 'quantitative', title: unit },
    },
    layer: [
      { mark: 'bar', encoding: { color: { field: 'series', type: 'nominal', title: null, sort: series, legend: { orient: 'bottom' } } } },
      { mark: { type: 'text', align: 'left', dx: 3, fontSize: 9 }, encoding: { text: { field: 'value', type: 'quantitative', format: ',.4~r' } } },
    ],
  };
}

const round = (value: number) => Math.round(value * 100) / 100;

export function readLatest(): LatestResults {
  return JSON.parse(readFileSync(new URL('./results/latest.json', import.meta.url), 'utf8')) as LatestResults;
}

export async function writeBenchChart(): Promise<URL> {
  const file = imageFile('bench.svg');
  writeSvg(file, await renderSvg(benchChartSpec(readLatest())));
  return file;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(`wrote ${fileURLToPath(await writeBenchChart())}`);
