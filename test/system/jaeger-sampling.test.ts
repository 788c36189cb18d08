import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTR, OUTCOME, correlationIdFor } from '../../src/entries/otel.js';
import { keyHash } from '../../src/telemetry/correlation.js';
import { postJson } from '../helpers/http.js';
import { JAEGER_BINARY, JAEGER_MISSING_REASON, JAEGER_RELEASE, startJaeger, type JaegerServer } from '../jaeger-support/jaeger.js';
import { startExample, EXAMPLE_START_TIMEOUT_MS, type RunningExample } from '../jaeger-support/example.js';
import { searchTraces, serverSpan, tag, type JaegerTrace } from '../jaeger-support/jaeger-api.js';

/**
 * Sampling keyed on the intent, end to end: the example with OTEL_TRACES_SAMPLER_ARG=0.5 (idempotencySampler under
 * a ParentBasedSampler, the key's hash put on the server span by the HTTP instrumentation's start hook), each
 * intent sent three times, and what reached a real Jaeger counted per intent.
 */
const RATIO = 0.5;
const INTENTS = 200;
const SENDS_PER_INTENT = 3;
const CONCURRENT_INTENTS = 8;
/** Fixed keys: the decision is a function of the key alone, so the kept share is the same on every run (0.48). */
const KEYS = Array.from({ length: INTENTS }, (_, intent) => `sampling-intent-${intent}`);
const ACCOUNT = `acct_sampling_${randomBytes(4).toString('hex')}`;
const ARRIVAL_TIMEOUT_MS = 60_000;
/**
 * No new trace for this long after the last request: every sampled span has been exported and stored. How many
 * traces the sampler keeps is not known beforehand, so their end is an absence, seen over a quiet window.
 */
const QUIET_MS = 2_000;

let jaeger: JaegerServer;
let example: RunningExample;
let startedMs: number;
const statuses: number[] = [];
/** Traces per correlation ID, of the payments service (kept originals carry the ledger's spans too). */
let tracesByIntent: Map<string, JaegerTrace[]>;
let ledgerTraceIds: Set<string>;

async function sendIntents(baseUrl: string) {
  let next = 0;
  const worker = async () => {
    while (next < KEYS.length) {
      const key = KEYS[next++]!;
      for (let send = 0; send < SENDS_PER_INTENT; send++) {
        statuses.push((await postJson(`${baseUrl}/payments`, { amount: 1500, currency: 'EUR' }, { key, account: ACCOUNT })).status);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENT_INTENTS }, worker));
}

async function everything(service: string): Promise<JaegerTrace[]> {
  const { traces } = await searchTraces(jaeger, {
    service,
    limit: INTENTS * SENDS_PER_INTENT * 2,
    startUs: (startedMs - 60_000) * 1_000,
    endUs: (Date.now() + 60_000) * 1_000,
  });
  return traces;
}

describe.skipIf(!JAEGER_BINARY)(
  JAEGER_BINARY ? `idempotencySampler at ratio ${RATIO} with a real Jaeger ${JAEGER_RELEASE}` : `Jaeger intent sampling (skipped: ${JAEGER_MISSING_REASON})`,
  () => {
    beforeAll(
      async () => {
        startedMs = Date.now();
        jaeger = await startJaeger();
        example = await startExample(jaeger.otlpUrl, { OTEL_TRACES_SAMPLER_ARG: String(RATIO) });
        await sendIntents(example.baseUrl);
        // Poll until no new trace arrives for QUIET_MS (the services export every 100 ms), within a deadline.
        const deadline = Date.now() + ARRIVAL_TIMEOUT_MS;
        let count = -1;
        let quietSinceMs = Date.now();
        let traces: JaegerTrace[] = [];
        while (Date.now() < deadline) {
          traces = await everything('payments');
          if (traces.length !== count) [count, quietSinceMs] = [traces.length, Date.now()];
          else if (count > 0 && Date.now() - quietSinceMs >= QUIET_MS) break;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        tracesByIntent = new Map();
        for (const trace of traces) {
          const id = String(tag(serverSpan(trace, 'payments')?.tags, ATTR.CORRELATION_ID));
          tracesByIntent.set(id, [...(tracesByIntent.get(id) ?? []), trace]);
        }
        ledgerTraceIds = new Set((await everything('ledger')).map((trace) => trace.traceID));
      },
      EXAMPLE_START_TIMEOUT_MS + ARRIVAL_TIMEOUT_MS + 120_000,
    );

    afterAll(async () => {
      await example?.stop();
      await jaeger?.stop();
    }, 40_000);

    it('answered every request (a dropped trace is sampling, not a failure)', () => {
      expect(statuses).toHaveLength(INTENTS * SENDS_PER_INTENT);
      expect(statuses.filter((status) => status !== 201)).toEqual([]);
    });

    it('stores all three traces of an intent or none of them', () => {
      const intents = KEYS.map((key) => tracesByIntent.get(correlationIdFor(ACCOUNT, key))?.length ?? 0);
      expect(intents.filter((count) => count !== 0 && count !== SENDS_PER_INTENT)).toEqual([]);
      // Nothing but these intents was sent: no trace without one of their correlation IDs.
      const known = new Set(KEYS.map((key) => correlationIdFor(ACCOUNT, key)));
      expect([...tracesByIntent.keys()].filter((id) => !known.has(id))).toEqual([]);
    });

    it(`keeps ${RATIO} ± 0.1 of the intents, each with its original (executed, with the ledger's spans) and both replays`, () => {
      const kept = KEYS.filter((key) => tracesByIntent.has(correlationIdFor(ACCOUNT, key)));
      const share = kept.length / INTENTS;
      console.log(`kept ${kept.length} of ${INTENTS} intents (${share}), ${kept.length * SENDS_PER_INTENT} traces`);
      expect(share).toBeGreaterThanOrEqual(RATIO - 0.1);
      expect(share).toBeLessThanOrEqual(RATIO + 0.1);
      for (const key of kept) {
        const found = tracesByIntent.get(correlationIdFor(ACCOUNT, key))!;
        const outcomes = found.map((trace) => tag(serverSpan(trace, 'payments')!.tags, ATTR.OUTCOME)).sort();
        expect(outcomes).toEqual([OUTCOME.EXECUTED, OUTCOME.REPLAYED, OUTCOME.REPLAYED]);
        const original = found.find((trace) => tag(serverSpan(trace, 'payments')!.tags, ATTR.OUTCOME) === OUTCOME.EXECUTED)!;
        expect(serverSpan(original, 'ledger'), key).toBeDefined();
      }
    });

    it("decides on the key's hash: the kept intents are those whose randomness (the hash's first 56 bits) reaches the ratio's threshold", () => {
      const threshold = 2n ** 56n - BigInt(Math.round(RATIO * 2 ** 56));
      const predicted = KEYS.filter((key) => BigInt(`0x${keyHash(key).slice(0, 14)}`) >= threshold);
      expect(KEYS.filter((key) => tracesByIntent.has(correlationIdFor(ACCOUNT, key)))).toEqual(predicted);
    });

    it('has the ledger follow the caller: no ledger trace outside the kept payments traces', () => {
      const kept = new Set([...tracesByIntent.values()].flat().map((trace) => trace.traceID));
      expect(ledgerTraceIds.size).toBeGreaterThan(0);
      expect([...ledgerTraceIds].filter((id) => !kept.has(id))).toEqual([]);
    });
  },
);
