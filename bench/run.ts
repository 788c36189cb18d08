import os from 'node:os';
import pg from 'pg';
import { PostgresStore } from '../src/entries/postgres.js';
import { benchSchemaSql, type ServerKind } from './app.js';
import { measureDuplicates, type BurstResult } from './duplicates.js';
import { describeEnvironment } from './environment.js';
import { runLoad, type LoadResult } from './load.js';
import { EXTRA_SCENARIOS, SCENARIOS, type Scenario } from './scenarios.js';
import { writeResults, type CpuSummary, type Measured, type Sample, type Summary } from './report.js';
import { buildLibrary } from './library.js';
import { ServerProcess } from './servers.js';
import { median, percentile, round } from './stats.js';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';

/**
 * `npm run bench` (about 15 minutes) or `npm run bench -- --quick` (about a minute, for a smoke test).
 * Every scenario runs in its own server process; rounds interleave the scenarios (A B C ... A B C ...)
 * so drift of a shared machine hits them alike, and each figure is the median over the rounds.
 * Writes bench/results/latest.json (the summary) and bench/results/details.json (rounds, machine, extras).
 */
const quick = process.argv.includes('--quick');
const settings = quick
  ? { rounds: 3, durationSeconds: 1, warmupSeconds: 1, connectionCounts: [8], latencyRounds: 1, bursts: 10, burstConcurrency: 10, scaleOutRounds: 0 }
  : { rounds: 10, durationSeconds: 3, warmupSeconds: 3, connectionCounts: [8, 32], latencyRounds: 5, bursts: 50, burstConcurrency: 20, scaleOutRounds: 3 };
// `--seconds=5` sets the length of each measured round (a quick run's 1 s rounds still carry JIT warm-up).
const secondsArgument = process.argv.find((argument) => argument.startsWith('--seconds='));
if (secondsArgument) settings.durationSeconds = Number(secondsArgument.slice('--seconds='.length));
// `--connections=8,32` overrides the run's connection counts (to look at one of them quickly).
const connectionsArgument = process.argv.find((argument) => argument.startsWith('--connections='));
if (connectionsArgument) settings.connectionCounts = connectionsArgument.slice('--connections='.length).split(',').map(Number);
/** The unsaturated latency: one connection, one request at a time, for the baseline and transactional mode. */
const LATENCY_SCENARIOS = ['baseline', 'transactional', 'handwritten'] as const;
buildLibrary();
// The server at DATABASE_URL, or a real one started for this run (durable, as a production server is).
const postgres = await serverFromEnvironment();
const databaseUrl = postgres.url;
const resultsDir = new URL('./results/', import.meta.url);

const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
// pool.end() resolves before its connections have closed: the server stopping at the end of the run may still end one.
pool.on('error', () => undefined);
const environment = await describeEnvironment(pool);
// `--only=transactional,handwritten` measures just those and the baseline every ratio is against (a quick
// comparison; results go where a quick run's do, never over latest.json).
const onlyArgument = process.argv
  .find((argument) => argument.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',');
const scenarios = (quick ? SCENARIOS : [...SCENARIOS, ...EXTRA_SCENARIOS]).filter(
  (scenario) => !onlyArgument || scenario.name === 'baseline' || onlyArgument.includes(scenario.name),
);
log(
  `${quick ? 'quick' : 'full'} run: ${scenarios.length} scenarios x ${settings.rounds} rounds of ${settings.durationSeconds} s ` +
    `at ${settings.connectionCounts.join(' and ')} connections, then latency at 1 connection`,
);

for (const scenario of scenarios) await prepareSchema(schemaOf(scenario.name), scenario.server.partitioned ?? false);
const servers = await Promise.all(scenarios.map((scenario) => ServerProcess.start({ ...scenario.server, schema: schemaOf(scenario.name) }, databaseUrl)));
log(`servers up at ${seconds()} s`);
try {
  for (const [index, scenario] of scenarios.entries()) await completeReplayKeys(servers[index]!, scenario);
  const byConnections: Record<number, Measured> = {};
  for (const connections of settings.connectionCounts) {
    for (const [index, scenario] of scenarios.entries()) await load(servers[index]!, scenario, connections, settings.warmupSeconds);
    log(`${connections} connections: warmed up at ${seconds()} s`);
    const samples = new Map<string, Sample[]>(scenarios.map((scenario) => [scenario.name, []]));
    for (let round = 1; round <= settings.rounds; round++) {
      // Each round starts one scenario further on, so that no scenario always follows the same one.
      for (const index of rotated(scenarios.length, round - 1)) {
        const scenario = scenarios[index]!;
        samples.get(scenario.name)!.push(await measure(servers[index]!, scenario, connections));
      }
      log(`${connections} connections: round ${round}/${settings.rounds} done`);
    }
    byConnections[connections] = await summarizeAll(samples);
  }
  const latencyC1 = await measureLatencyC1();
  log(`measured in ${seconds()} s`);

  const duplicates: Record<string, BurstResult> = {};
  for (const name of ['naive', 'lease', 'transactional'] as const) {
    const index = scenarios.findIndex((scenario) => scenario.name === name);
    if (index === -1) continue;
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
  await writeResults({ quick: quick || onlyArgument !== undefined, settings, environment, byConnections, latencyC1, duplicates, scaleOut }, resultsDir);
  log(`done in ${seconds()} s`);
} finally {
  await Promise.all(servers.map((server) => server.stop()));
  await pool.end();
  await postgres.stop();
}

async function summarizeAll(samples: Map<string, Sample[]>): Promise<Measured> {
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
  return { summaries, cpu, samples };
}

/** p50 at 1 connection, median over interleaved rounds: what one request costs when nothing queues. */
async function measureLatencyC1(): Promise<Record<(typeof LATENCY_SCENARIOS)[number], number>> {
  const p50s = new Map<string, number[]>(LATENCY_SCENARIOS.map((name) => [name, []]));
  for (let round = 0; round < settings.latencyRounds; round++) {
    for (const name of LATENCY_SCENARIOS) {
      const index = scenarios.findIndex((scenario) => scenario.name === name);
      if (index === -1) continue;
      p50s.get(name)!.push((await load(servers[index]!, scenarios[index]!, 1, settings.durationSeconds)).p50Ms);
    }
  }
  const p50 = (name: string) => round(median(p50s.get(name)!), 3);
  const latency = { baseline: p50('baseline'), transactional: p50('transactional'), handwritten: p50('handwritten') };
  log(`latency at 1 connection (p50): baseline ${latency.baseline} ms, transactional ${latency.transactional} ms, handwritten ${latency.handwritten} ms`);
  return latency;
}

/** Indexes 0 … length − 1, starting at `offset` (mod length). */
function rotated(length: number, offset: number): number[] {
  return Array.from({ length }, (_, step) => (offset + step) % length);
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

function load(server: ServerProcess, scenario: Scenario, connections: number, durationSeconds: number): Promise<LoadResult> {
  return runLoad({ url: server.url, connections, durationSeconds, request: scenario.request });
}

/** One round of one scenario; round trips are the server's pg query calls per request served. */
async function measure(server: ServerProcess, scenario: Scenario, connections: number): Promise<Sample> {
  const before = await server.stats();
  const { latenciesMs: _latencies, ...result } = await load(server, scenario, connections, settings.durationSeconds);
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
 * the same total number of client connections (the first of the run's counts), interleaved.
 */
async function measureScaleOut(rounds: number) {
  const schema = 'bench_scale_out';
  await prepareSchema(schema, false);
  const spec = { kind: 'lease' as ServerKind, schema };
  const pair = await Promise.all([ServerProcess.start(spec, databaseUrl), ServerProcess.start(spec, databaseUrl)]);
  const request = SCENARIOS.find((scenario) => scenario.name === 'lease')!.request;
  const run = async (processes: ServerProcess[]) => {
    const connections = settings.connectionCounts[0]! / processes.length;
    const results = await Promise.all(processes.map((server) => runLoad({ url: server.url, connections, durationSeconds: settings.durationSeconds, request })));
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

function seconds(): number {
  return Math.round(performance.now() / 1000);
}

function log(message: string): void {
  console.log(`[bench] ${message}`);
}
