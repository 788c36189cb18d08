import { createTraceState, type TraceState } from '@opentelemetry/api';

/**
 * Consistent probability sampling as OpenTelemetry standardises it (OTEP 235, the `ot` entry of the W3C
 * tracestate): every sampler along a trace compares one 56-bit randomness value `rv` with its own rejection
 * threshold `th`, and keeps the span when `rv >= th`. Two samplers reading the same `rv` therefore agree: the
 * one with the lower ratio keeps a subset of what the other keeps, and `th` on a kept span tells a Collector
 * its adjusted count (1 / ratio). https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/
 */

const RANDOMNESS_BITS = 56;
const RANDOMNESS_HEX_DIGITS = RANDOMNESS_BITS / 4;
/** The threshold that rejects every span (ratio 0); ratio 1 is threshold 0. */
const NEVER_THRESHOLD = 1n << BigInt(RANDOMNESS_BITS);
const OT_VENDOR_KEY = 'ot';
const HEX_56_BITS = /^[0-9a-f]{14}$/;

/** The rejection threshold of a ratio from 0 to 1, rounded as the SDK's ComposableProbabilitySampler rounds it. */
export function thresholdOf(ratio: number): bigint {
  return NEVER_THRESHOLD - BigInt(Math.round(ratio * 2 ** RANDOMNESS_BITS));
}

/** Kept when the randomness reaches the threshold: threshold 0 keeps everything, NEVER_THRESHOLD nothing. */
export function keeps(randomness: bigint, threshold: bigint): boolean {
  return threshold < NEVER_THRESHOLD && randomness >= threshold;
}

/** A 56-bit randomness value from the first 14 hex digits of a hash (or any uniformly random hex string). */
export function randomnessOfHex(hex: string): bigint | undefined {
  const digits = hex.slice(0, RANDOMNESS_HEX_DIGITS).toLowerCase();
  return HEX_56_BITS.test(digits) ? BigInt(`0x${digits}`) : undefined;
}

/** The randomness of a trace without `rv`: the trace ID's last 56 bits (W3C Trace Context level 2 random flag). */
export function randomnessOfTraceId(traceId: string): bigint {
  return BigInt(`0x${traceId.slice(-RANDOMNESS_HEX_DIGITS)}`);
}

/** The `rv` the caller's tracestate carries, if it carries a well-formed one. */
export function inboundRandomness(traceState: TraceState | undefined): bigint | undefined {
  const rv = otFields(traceState).find(([name]) => name === 'rv')?.[1];
  return rv !== undefined && HEX_56_BITS.test(rv) ? BigInt(`0x${rv}`) : undefined;
}

/**
 * The tracestate to give the new span: the caller's, with our `rv` (when the randomness is not the trace
 * ID's) and, on a kept span only, our `th`, replacing theirs; other `ot` fields and vendors are kept.
 */
export function withSamplingState(traceState: TraceState | undefined, state: { randomness: bigint | undefined; threshold: bigint | undefined }): TraceState | undefined {
  const ours: Array<[string, string]> = [];
  if (state.threshold !== undefined) ours.push(['th', encodeThreshold(state.threshold)]);
  if (state.randomness !== undefined) ours.push(['rv', state.randomness.toString(16).padStart(RANDOMNESS_HEX_DIGITS, '0')]);
  const others = otFields(traceState).filter(([name]) => name !== 'th' && name !== 'rv');
  const fields = [...ours, ...others];
  const base = traceState ?? createTraceState();
  if (fields.length === 0) return traceState === undefined ? undefined : base.unset(OT_VENDOR_KEY);
  return base.set(OT_VENDOR_KEY, fields.map(([name, value]) => `${name}:${value}`).join(';'));
}

/** `th` as the specification writes it: 14 hex digits with trailing zeros removed, `0` for "keep all". */
function encodeThreshold(threshold: bigint): string {
  if (threshold === 0n) return '0';
  return threshold.toString(16).padStart(RANDOMNESS_HEX_DIGITS, '0').replace(/0+$/, '');
}

function otFields(traceState: TraceState | undefined): Array<[string, string]> {
  const value = traceState?.get(OT_VENDOR_KEY);
  if (!value) return [];
  return value.split(';').flatMap((field) => {
    const colon = field.indexOf(':');
    return colon > 0 ? [[field.slice(0, colon), field.slice(colon + 1)] as [string, string]] : [];
  });
}
