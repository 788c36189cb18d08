import type { RequestShape } from './load.js';
import type { ServerSpec } from './servers.js';

export type ScenarioName = 'baseline' | 'lease' | 'transactional' | 'replay' | 'passthrough' | 'naive' | 'telemetry' | 'handwritten' | 'handwrittenLease';

export interface Scenario {
  name: ScenarioName | 'replayUncached' | 'baselineTelemetry' | 'leasePartitioned' | 'transactionalPartitioned' | 'transactionalUnpipelined';
  server: Omit<ServerSpec, 'schema'>;
  request: RequestShape;
  /** Keys completed before the load starts; the load then replays them in a cycle. */
  replayKeys?: number;
  description: string;
}

const ORDER = '{"amount":100}';
const runId = Date.now().toString(36);

/** A fresh key per request, unique across scenarios, rounds and runs. */
function freshKeys(prefix: string): () => string {
  let next = 0;
  return () => `${prefix}-${runId}-${next++}`;
}

/** Keys `${prefix}-0` .. `${prefix}-(count-1)`, in a cycle. */
export function cycledKeys(prefix: string, count: number): () => string {
  let next = 0;
  return () => `${prefix}-${runId}-${next++ % count}`;
}

/** Fewer completed keys than the replay cache holds (1000 by default), as retries of recent requests are. */
export const REPLAY_KEYS = 500;

function post(key?: () => string): RequestShape {
  return { method: 'POST', path: '/orders', body: ORDER, ...(key ? { key } : {}) };
}

/**
 * The scenarios of every run, in the order a round measures them (each round starting one further on): each
 * next to what it is compared with (transactional mode and its hand-written reference, lease mode and its own,
 * telemetry and lease mode), so that the ratios compare measurements taken seconds apart.
 */
export const SCENARIOS: readonly Scenario[] = [
  { name: 'baseline', server: { kind: 'baseline' }, request: post(freshKeys('baseline')), description: 'no middleware: BEGIN, INSERT, COMMIT' },
  { name: 'passthrough', server: { kind: 'lease' }, request: post(), description: 'lease-mode middleware, request without a key' },
  {
    name: 'transactional',
    server: { kind: 'transactional' },
    request: post(freshKeys('transactional')),
    description: 'transactional mode: the INSERT goes through ctx.idempotency.db',
  },
  {
    name: 'handwritten',
    server: { kind: 'handwritten' },
    request: post(freshKeys('handwritten')),
    description: 'by hand, no library: claim INSERT and completion UPDATE inside the business transaction',
  },
  { name: 'lease', server: { kind: 'lease' }, request: post(freshKeys('lease')), description: 'lease mode, a new key per request' },
  {
    name: 'handwrittenLease',
    server: { kind: 'handwrittenLease' },
    request: post(freshKeys('handwritten-lease')),
    description: 'by hand, no library: claim and completion each committed around the business transaction',
  },
  { name: 'telemetry', server: { kind: 'lease', telemetry: true }, request: post(freshKeys('telemetry')), description: 'lease mode with the OpenTelemetry SDK' },
  {
    name: 'replay',
    server: { kind: 'lease' },
    request: post(cycledKeys('replay', REPLAY_KEYS)),
    replayKeys: REPLAY_KEYS,
    description: `replays of ${REPLAY_KEYS} completed keys (in the replay cache)`,
  },
  { name: 'naive', server: { kind: 'naive' }, request: post(freshKeys('naive')), description: 'SELECT the key, run, INSERT the response' },
];

/**
 * Only in the full run: replays with the cache off (one claim statement per replay), the SDK on the
 * baseline, which separates what the SDK itself costs from what the middleware's telemetry adds,
 * both modes on a table partitioned by time (the claim function's cost), and transactional mode on a
 * pool that does not pipeline (what pipelining saves).
 */
export const EXTRA_SCENARIOS: readonly Scenario[] = [
  {
    name: 'baselineTelemetry',
    server: { kind: 'baseline', telemetry: true },
    request: post(freshKeys('baseline-telemetry')),
    description: 'the baseline with the OpenTelemetry SDK (no middleware)',
  },
  {
    name: 'replayUncached',
    server: { kind: 'lease', replayCacheEntries: 0 },
    request: post(cycledKeys('replay-uncached', REPLAY_KEYS)),
    replayKeys: REPLAY_KEYS,
    description: 'replays with replayCacheEntries: 0 (one claim statement each)',
  },
  {
    name: 'leasePartitioned',
    server: { kind: 'lease', partitioned: true },
    request: post(freshKeys('lease-partitioned')),
    description: 'lease mode on a table partitioned by time (partitioning: true)',
  },
  {
    name: 'transactionalPartitioned',
    server: { kind: 'transactional', partitioned: true },
    request: post(freshKeys('transactional-partitioned')),
    description: 'transactional mode on a table partitioned by time (partitioning: true)',
  },
  {
    name: 'transactionalUnpipelined',
    server: { kind: 'transactional', pipeline: false },
    request: post(freshKeys('transactional-unpipelined')),
    description: 'transactional mode on a pool without pipeline: true (each statement waits for the one before)',
  },
];
