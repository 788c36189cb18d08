import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import pg from 'pg';
import { PostgresStore } from '../src/index.js';
import { benchSchemaSql, type ServerKind } from './app.js';
import { measureDuplicates, type BurstResult } from './duplicates.js';
import { describeEnvironment } from './environment.js';
import { runLoad, type LoadResult } from './load.js';
import { EXTRA_SCENARIOS, SCENARIOS, type Scenario } from './scenarios.js';
import { ServerProcess } from './servers.js';
import { median, percentile, round } from './stats.js';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';

/**
 * `npm run bench` (about 8 minutes) or `npm run bench -- --quick` (under a minute, for a smoke test).
 * Every scenario runs in its own server process; rounds interleave the scenarios (A B C ... A B C ...)
 * so drift of a shared machine hits them alike, and each figure is the median over the rounds.
 * Writes bench/results/latest.json (the summary) and bench/results/details.json (rounds, machine, extras).
 */
const quick = process.argv.includes('--quick');
const settings = quick
  ? { rounds: 3, durationSeconds: 1, warmupSeconds: 1, connections: 8, bursts: 10, burstConcurrency: 10, scaleOutRounds: 0 }
  : { rounds: 5, durationSeconds: 8, warmupSeconds: 3, connections: 8, bursts: 50, burstConcurrency: 20, scaleOutRounds: 3 };
// The server at DATABASE_URL, or a real one started for this run (durable, as a production server is).
const postgres = await serverFromEnvironment();
const databaseUrl = postgres.url;
const resultsDir = new URL('./results/', import.meta.url);

interface Sample extends Omit<LoadResult, 'latenciesMs'> {
  roundTrips: number;
  /** CPU of the server process and of its Postgres backends, per request served. */
  serverCpuMs: number;
  databaseCpuMs: number;
}

interface Summary {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  roundTrips: number;
  rssMb: number;
}

/** Not in latest.json (whose shape is fixed): CPU per request, the figure that load on the machine disturbs least. */
interface CpuSummary {
  serverCpuMs: number;
  databaseCpuMs: number;
}

const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
// pool.end() resolves before its connections have closed: the server stopping at the end of the run may still end one.
pool.on('error', () => undefined);
const environment = await describeEnvironment(pool);
const scenarios = quick ? SCENARIOS : [...SCENARIOS, ...EXTRA_SCENARIOS];
log(`${quick ? 'quick' : 'full'} run: ${scenarios.length} scenarios x ${settings.rounds} rounds of ${settings.durationSeconds} s, ${settings.connections} connections`);

for (const scenario of scenarios) await prepareSchema(schemaOf(scenario.name), scenario.server.partitioned ?? false);
const servers = await Promise.all(scenarios.map((scenario) => ServerProcess.start({ ...scenario.server, schema: schemaOf(scenario.name) }, databaseUrl)));
log(`servers up at ${seconds()} s`);
try {
  for (const [index, scenario] of scenarios.entries()) await completeReplayKeys(servers[index]!, scenario);
  for (const [index, scenario] of scenarios.entries()) await load(servers[index]!, scenario, settings.warmupSeconds);
  log(`warmed up at ${seconds()} s`);

  const samples = new Map<string, Sample[]>(scenarios.map((scenario) => [scenario.name, []]));
  for (let round = 1; round <= settings.rounds; round++) {
    for (const [index, scenario] of scenarios.entries()) samples.get(scenario.name)!.push(await measure(servers[index]!, scenario));
    log(`round ${round}/${settings.rounds} done`);
  }
  const summaries = new Map<string, Summary>();
  const cpu = new Map<string, CpuSummary>();
  for (const [index, scenario] of scenarios.entries()) {
    const { maxRssMb } = await servers[index]!.stats();
    const list = samples.get(scenario.name)!;
    summaries.set(scenario.name, summarize(list, maxRssMb));
    cpu.set(scenario.name, {
      serverCpuMs: round(median(list.map((sample) => sample.serverCpuMs)), 3),
      databaseCpuMs: round(median(list.map((sample) => sample.databaseCpuMs)), 3),
    });
  }
  log(`measured in ${seconds()} s`);

  const duplicates: Record<string, BurstResult> = {};
  for (const name of ['naive', 'lease', 'transactional'] as const) {
    const index = scenarios.findIndex((scenario) => scenario.name === name);
    duplicates[name] = await measureDuplicates({
      url: servers[index]!.url,
      pool,
      schema: schemaOf(name),
      label: name,
      bursts: settings.bursts,
      concurrency: settings.burstConcurrency,
    });
  }

  const scaleOut = settings.scaleOutRounds > 0 ? await measureScaleOut(settings.scaleOutRounds) : undefined;
  environment.loadAverageAtEnd = os.loadavg()[0]!;
  await writeResults(summaries, cpu, samples, duplicates, scaleOut);
  log(`done in ${seconds()} s`);
} finally {
  await Promise.all(servers.map((server) => server.stop()));
  await pool.end();
  await postgres.stop();
}

function schemaOf(name: string): string {
  return `bench_${name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)}`;
}

/** A fresh schema per scenario: its business table, the naive check's table and the records table. */
async function prepareSchema(schema: string, partitioned: boolean): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.query(benchSchemaSql(schema));
  const store = new PostgresStore({ pool, schema, partitioning: partitioned });
  await store.migrate();
  await store.close();
}

/** Runs the first request of every key the replay scenario will repeat. */
async function completeReplayKeys(server: ServerProcess, scenario: Scenario): Promise<void> {
  if (!scenario.replayKeys) return;
  const keys = Array.from({ length: scenario.replayKeys }, () => scenario.request.key!());
  for (let start = 0; start < keys.length; start += 10) {
    await Promise.all(
      keys.slice(start, start + 10).map(async (key) => {
        const response = await fetch(`${server.url}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body: scenario.request.body ?? null,
        });
        await response.arrayBuffer();
        if (response.status !== 201) throw new Error(`preparing replay key ${key}: status ${response.status}`);
      }),
    );
  }
}

function load(server: ServerProcess, scenario: Scenario, durationSeconds: number): Promise<LoadResult> {
  return runLoad({ url: server.url, connections: settings.connections, durationSeconds, request: scenario.request });
}

/** One round of one scenario; round trips are the server's pg query calls per request served. */
async function measure(server: ServerProcess, scenario: Scenario): Promise<Sample> {
  const before = await server.stats();
  const { latenciesMs: _latencies, ...result } = await load(server, scenario, settings.durationSeconds);
  const after = await server.stats();
  if (result.failures > 0) log(`  ${scenario.name}: ${result.failures} failed requests`);
  const served = Math.max(1, after.requests - before.requests);
  return {
    ...result,
    roundTrips: (after.roundTrips - before.roundTrips) / served,
    serverCpuMs: (after.serverCpuMs - before.serverCpuMs) / served,
    databaseCpuMs: (after.databaseCpuMs - before.databaseCpuMs) / served,
  };
}

function summarize(samples: Sample[], rssMb: number): Summary {
  return {
    rps: round(median(samples.map((sample) => sample.rps)), 0),
    p50Ms: round(median(samples.map((sample) => sample.p50Ms))),
    p99Ms: round(median(samples.map((sample) => sample.p99Ms))),
    roundTrips: round(median(samples.map((sample) => sample.roundTrips))),
    rssMb: round(rssMb, 0),
  };
}

/**
 * Scale-out: lease mode served by one process, then by two processes on the same records table with
 * the same total number of client connections, interleaved.
 */
async function measureScaleOut(rounds: number) {
  const schema = 'bench_scale_out';
  await prepareSchema(schema, false);
  const spec = { kind: 'lease' as ServerKind, schema };
  const pair = await Promise.all([ServerProcess.start(spec, databaseUrl), ServerProcess.start(spec, databaseUrl)]);
  const request = SCENARIOS.find((scenario) => scenario.name === 'lease')!.request;
  const run = async (processes: ServerProcess[]) => {
    const connections = settings.connections / processes.length;
    const results = await Promise.all(
      processes.map((server) => runLoad({ url: server.url, connections, durationSeconds: settings.durationSeconds, request })),
    );
    const latencies = results.flatMap((result) => result.latenciesMs).sort((a, b) => a - b);
    return { rps: results.reduce((sum, result) => sum + result.rps, 0), p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99) };
  };
  try {
    await run(pair);
    const one: Array<Awaited<ReturnType<typeof run>>> = [];
    const two: typeof one = [];
    for (let round = 1; round <= rounds; round++) {
      one.push(await run([pair[0]]));
      two.push(await run(pair));
    }
    const summary = (list: typeof one) => ({
      rps: round(median(list.map((entry) => entry.rps)), 0),
      p50Ms: round(median(list.map((entry) => entry.p50Ms))),
      p99Ms: round(median(list.map((entry) => entry.p99Ms))),
    });
    const result = { oneProcess: summary(one), twoProcesses: summary(two), ratio: 0 };
    result.ratio = round(result.twoProcesses.rps / result.oneProcess.rps);
    log(`scale-out: 1 process ${result.oneProcess.rps} rps, 2 processes ${result.twoProcesses.rps} rps (x${result.ratio})`);
    return result;
  } finally {
    await Promise.all(pair.map((server) => server.stop()));
  }
}

async function writeResults(
  summaries: Map<string, Summary>,
  cpu: Map<string, CpuSummary>,
  samples: Map<string, Sample[]>,
  duplicates: Record<string, BurstResult>,
  scaleOut: Awaited<ReturnType<typeof measureScaleOut>> | undefined,
): Promise<void> {
  const baselineRps = summaries.get('baseline')!.rps;
  const named = SCENARIOS.map((scenario) => scenario.name);
  const latest = {
    scenarios: Object.fromEntries(named.map((name) => [name, summaries.get(name)!])),
    ratios: Object.fromEntries(named.map((name) => [name, round(summaries.get(name)!.rps / baselineRps)])),
  };
  const lease = summaries.get('lease')!;
  const details = {
    mode: quick ? 'quick' : 'full',
    settings,
    environment,
    roundTripsMethod: 'pg.Client#query calls counted in each server process, divided by the requests it served',
    telemetryOnVsOff: round(summaries.get('telemetry')!.rps / lease.rps),
    sdkOnBaselineVsOff: summaries.has('baselineTelemetry') ? round(summaries.get('baselineTelemetry')!.rps / baselineRps) : undefined,
    partitionedVsPlain: summaries.has('leasePartitioned')
      ? {
          lease: round(summaries.get('leasePartitioned')!.rps / lease.rps),
          transactional: round(summaries.get('transactionalPartitioned')!.rps / summaries.get('transactional')!.rps),
        }
      : undefined,
    cpuPerRequestMs: Object.fromEntries(cpu),
    addedP50Ms: Object.fromEntries([...summaries].map(([name, summary]) => [name, round(summary.p50Ms - summaries.get('baseline')!.p50Ms)])),
    extras: Object.fromEntries([...summaries].filter(([name]) => !named.includes(name as never))),
    duplicates,
    scaleOut,
    rounds: Object.fromEntries(samples),
  };
  await mkdir(resultsDir, { recursive: true });
  if (!quick) await writeFile(new URL('latest.json', resultsDir), `${JSON.stringify(latest, null, 2)}\n`);
  await writeFile(new URL(quick ? 'quick.json' : 'details.json', resultsDir), `${JSON.stringify(quick ? { latest, details } : details, null, 2)}\n`);
  printTable(summaries, cpu, baselineRps, details);
}

function printTable(
  summaries: Map<string, Summary>,
  cpu: Map<string, CpuSummary>,
  baselineRps: number,
  details: { duplicates: Record<string, BurstResult>; telemetryOnVsOff: number; sdkOnBaselineVsOff: number | undefined },
) {
  const lines = [
    '| scenario | req/s | x baseline | p50 ms | p99 ms | SQL round trips | CPU ms/req (Node + Postgres) | peak RSS MB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [name, s] of summaries) {
    const { serverCpuMs, databaseCpuMs } = cpu.get(name)!;
    lines.push(
      `| ${name} | ${s.rps} | ${round(s.rps / baselineRps)} | ${s.p50Ms} | ${s.p99Ms} | ${s.roundTrips} | ${round(serverCpuMs)} + ${round(databaseCpuMs)} | ${s.rssMb} |`,
    );
  }
  console.log(`\n${lines.join('\n')}\n`);
  console.log(`telemetry on / off (lease): ${details.telemetryOnVsOff}`);
  if (details.sdkOnBaselineVsOff !== undefined) console.log(`SDK on / off (baseline, no middleware): ${details.sdkOnBaselineVsOff}`);
  for (const [name, result] of Object.entries(details.duplicates)) {
    console.log(`duplicates, ${name}: ${result.duplicateExecutions} extra executions in ${result.burstsWithDuplicates} of ${result.bursts} bursts of ${result.concurrency}`);
  }
  console.log(`load average: ${environment.loadAverageAtStart.toFixed(2)} at start, ${environment.loadAverageAtEnd?.toFixed(2)} at end (${environment.cpus} CPUs)`);
}

function seconds(): number {
  return Math.round(performance.now() / 1000);
}

function log(message: string): void {
  console.log(`[bench] ${message}`);
}
