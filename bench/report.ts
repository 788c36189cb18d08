import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { writeBenchChart } from './chart.js';
import type { BurstResult } from './duplicates.js';
import type { Environment } from './environment.js';
import type { LoadResult } from './load.js';
import { SCENARIOS } from './scenarios.js';
import { median, round } from './stats.js';

export interface Sample extends Omit<LoadResult, 'latenciesMs'> {
  roundTrips: number;
  /** CPU of the server process and of its Postgres backends, per request served. */
  serverCpuMs: number;
  databaseCpuMs: number;
}

export interface Summary {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  roundTrips: number;
  rssMb: number;
}

/** CPU per request, the figure that load on the machine disturbs least (the parts in details.json, the sums in latest.json). */
export interface CpuSummary {
  serverCpuMs: number;
  databaseCpuMs: number;
}

/** Every scenario at one number of client connections. */
export interface Measured {
  summaries: Map<string, Summary>;
  cpu: Map<string, CpuSummary>;
  samples: Map<string, Sample[]>;
}

export interface RunResults {
  quick: boolean;
  settings: { connectionCounts: number[] } & Record<string, unknown>;
  environment: Environment;
  byConnections: Record<number, Measured>;
  /** p50 in ms at 1 connection; the hand-written reference shows what the two added round trips cost by themselves. */
  latencyC1: { baseline: number; transactional: number; handwritten: number };
  duplicates: Record<string, BurstResult>;
  scaleOut: unknown;
}

/**
 * latest.json keeps its first shape (`scenarios` and `ratios` at the first connection count, ratios against the
 * baseline) and adds the comparisons the targets are about: each mode against the same job done by hand, telemetry
 * on against off, the other connection counts, and the unsaturated latency.
 */
export async function writeResults(results: RunResults, resultsDir: URL): Promise<void> {
  const [first, ...others] = results.settings.connectionCounts;
  const latest = {
    connections: first,
    ...summaryAt(results.byConnections[first!]!),
    byConnections: Object.fromEntries(others.map((connections) => [connections, summaryAt(results.byConnections[connections]!)])),
    latencyC1: { ...results.latencyC1, addedMs: round(results.latencyC1.transactional - results.latencyC1.baseline, 3) },
  };
  const details = {
    mode: results.quick ? 'quick' : 'full',
    settings: results.settings,
    environment: results.environment,
    roundTripsMethod: 'pg.Client#query calls counted in each server process, divided by the requests it served',
    byConnections: Object.fromEntries(Object.entries(results.byConnections).map(([connections, measured]) => [connections, detailsAt(measured)])),
    duplicates: results.duplicates,
    scaleOut: results.scaleOut,
  };
  await mkdir(resultsDir, { recursive: true });
  if (!results.quick) {
    await writeFile(new URL('latest.json', resultsDir), `${JSON.stringify(latest, null, 2)}\n`);
    // The README's chart is drawn from latest.json: redrawn with it, it never shows an older run than the tables.
    console.log(`redrew ${fileURLToPath(await writeBenchChart())}`);
  }
  const detailsFile = results.quick ? 'quick.json' : 'details.json';
  await writeFile(new URL(detailsFile, resultsDir), `${JSON.stringify(results.quick ? { latest, details } : details, null, 2)}\n`);
  for (const connections of results.settings.connectionCounts) printTable(connections, results.byConnections[connections]!);
  const { baseline, transactional, handwritten, addedMs } = latest.latencyC1;
  console.log(`latency at 1 connection, p50: baseline ${baseline} ms, transactional ${transactional} ms (+${addedMs} ms), handwritten ${handwritten} ms`);
  for (const [name, result] of Object.entries(results.duplicates)) {
    console.log(
      `duplicates, ${name}: ${result.duplicateExecutions} extra executions in ${result.burstsWithDuplicates} of ${result.bursts} bursts of ${result.concurrency}`,
    );
  }
  const { loadAverageAtStart, loadAverageAtEnd, cpus } = results.environment;
  console.log(`load average: ${loadAverageAtStart.toFixed(2)} at start, ${loadAverageAtEnd?.toFixed(2)} at end (${cpus} CPUs)`);
}

/** The scenarios whose CPU per request latest.json reports: the library's modes and what they compare with. */
const CPU_SCENARIOS = ['baseline', 'handwritten', 'transactional', 'handwrittenLease', 'lease'] as const;

/**
 * A paired ratio of scenario `a` to `b`: the median over rounds of `ratio` within each round, whose measurements
 * were taken seconds apart (the scenarios' order), so that a machine whose speed drifts from one round to the
 * next moves both alike; a ratio of two medians would not cancel the drift. NaN when either was not measured.
 */
function paired(samples: Map<string, Sample[]>, a: string, b: string, ratio: (a: Sample, b: Sample, baseline: Sample) => number): number {
  const [as, bs, baselines] = [samples.get(a), samples.get(b), samples.get('baseline')];
  if (!as || !bs || !baselines) return Number.NaN;
  return round(median(as.map((sample, index) => ratio(sample, bs[index]!, baselines[index]!))));
}

const rpsOf = (a: Sample, b: Sample) => a.rps / b.rps;

/** The summary of one connection count; its ratios are paired. */
function summaryAt({ summaries, cpu, samples }: Measured) {
  const named = SCENARIOS.map((scenario) => scenario.name).filter((name) => summaries.has(name));
  const rpsRatio = (a: string, b: string) => paired(samples, a, b, rpsOf);
  // Node process + its Postgres backends, per request: what a CPU-bound machine pays for each one.
  const cpuOf = (sample: Sample) => sample.serverCpuMs + sample.databaseCpuMs;
  const cpuAddedRatio = (a: string, b: string) => paired(samples, a, b, (x, y, baseline) => (cpuOf(x) - cpuOf(baseline)) / (cpuOf(y) - cpuOf(baseline)));
  const cpuMs = (name: string) => {
    const measured = cpu.get(name)!;
    return round(measured.serverCpuMs + measured.databaseCpuMs, 3);
  };
  return {
    scenarios: Object.fromEntries(named.map((name) => [name, summaries.get(name)!])),
    cpuPerRequestMs: Object.fromEntries(CPU_SCENARIOS.filter((name) => cpu.has(name)).map((name) => [name, cpuMs(name)])),
    ratios: {
      ...Object.fromEntries(named.map((name) => [name, rpsRatio(name, 'baseline')])),
      transactionalVsHandwritten: rpsRatio('transactional', 'handwritten'),
      leaseVsHandwritten: rpsRatio('lease', 'handwrittenLease'),
      telemetryVsOff: rpsRatio('telemetry', 'lease'),
      /** CPU the library adds over the baseline, against what the hand-written reference adds (target ≤ 1.2). */
      cpuAddedTransactionalVsHandwritten: cpuAddedRatio('transactional', 'handwritten'),
      cpuAddedLeaseVsHandwritten: cpuAddedRatio('lease', 'handwrittenLease'),
    },
  };
}

function detailsAt({ summaries, cpu, samples }: Measured) {
  const named: string[] = SCENARIOS.map((scenario) => scenario.name);
  const ratio = (a: string, b: string) => (samples.has(a) && samples.has(b) ? paired(samples, a, b, rpsOf) : undefined);
  return {
    sdkOnBaselineVsOff: ratio('baselineTelemetry', 'baseline'),
    partitionedVsPlain: summaries.has('leasePartitioned')
      ? { lease: ratio('leasePartitioned', 'lease'), transactional: ratio('transactionalPartitioned', 'transactional') }
      : undefined,
    pipelinedVsUnpipelined: ratio('transactional', 'transactionalUnpipelined'),
    cpuPerRequestMs: Object.fromEntries(cpu),
    addedP50Ms: Object.fromEntries([...summaries].map(([name, summary]) => [name, round(summary.p50Ms - summaries.get('baseline')!.p50Ms)])),
    extras: Object.fromEntries([...summaries].filter(([name]) => !named.includes(name))),
    rounds: Object.fromEntries(samples),
  };
}

function printTable(connections: number, measured: Measured): void {
  const { summaries, cpu, samples } = measured;
  const lines = [
    `${connections} connections:`,
    '| scenario | req/s | x baseline | p50 ms | p99 ms | SQL round trips | CPU ms/req (Node + Postgres) | peak RSS MB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [name, s] of summaries) {
    const { serverCpuMs, databaseCpuMs } = cpu.get(name)!;
    lines.push(
      `| ${name} | ${s.rps} | ${paired(samples, name, 'baseline', rpsOf)} | ${s.p50Ms} | ${s.p99Ms} | ${s.roundTrips} | ${round(serverCpuMs)} + ${round(databaseCpuMs)} | ${s.rssMb} |`,
    );
  }
  const { ratios } = summaryAt(measured);
  lines.push(
    `transactional / handwritten ${ratios.transactionalVsHandwritten}, lease / handwrittenLease ${ratios.leaseVsHandwritten}, telemetry on / off ${ratios.telemetryVsOff}`,
  );
  console.log(`\n${lines.join('\n')}\n`);
}
