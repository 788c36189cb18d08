/** What `runSoak` (scripts/soak.ts) takes and what it reports. */

export interface SoakOptions {
  seconds: number;
  clients: number;
  chaos: boolean;
  /** Lease mode instead of the example's transactional mode. */
  lease: boolean;
  /** Duplicates wait for the first request (`onInProgress: 'wait'`) instead of getting 409 at once. */
  wait?: boolean;
  sampleEveryMs: number;
  databaseUrl: string;
  log?: (line: string) => void;
}

export interface SoakSample {
  atSeconds: number;
  requests: number;
  requestsPerSecond: number;
  /** Latency percentiles of the requests answered since the previous sample. */
  p50Ms: number;
  p99Ms: number;
  rssMiB: number;
  heapMiB: number;
  pool: { total: number; idle: number; waiting: number };
  fault: string;
}

export interface SoakReport {
  mode: 'transactional' | 'lease';
  seconds: number;
  requests: number;
  operations: number;
  outcomes: Record<string, number>;
  faultsInjected: number;
  /** 5xx other than 503, answers that did not match the replayed original, network errors after all retries. */
  errors: string[];
  /** Requests with no answer within the hang bound. */
  hangs: number;
  lost: number;
  doubled: number;
  stuckRecords: number;
  samples: SoakSample[];
}
