import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPLAYED_HEADER } from '../../src/index.js';
import { ATTR, EVENT, OUTCOME, correlationIdFor } from '../../src/entries/otel.js';
import { until } from '../helpers/events.js';
import { postJson } from '../helpers/http.js';
import { JAEGER_BINARY, JAEGER_MISSING_REASON, JAEGER_RELEASE, jaegerBinaryVersion, startJaeger, type JaegerServer } from '../jaeger-support/jaeger.js';
import { jaegerPanelQueries } from '../jaeger-support/dashboard-queries.js';
import { startExample, EXAMPLE_START_TIMEOUT_MS, type RunningExample } from '../jaeger-support/example.js';
import { duplicatePicture } from '../jaeger-support/trace-picture.js';
import { gatherJaegerPreview } from '../jaeger-support/dashboard-preview.js';
import { dashboardPreviewSpec } from '../../scripts/pictures/dashboard-preview.js';
import { maybeUpdatePicture, svgTexts } from '../helpers/svg.js';
import { imageFile, renderSvg } from '../../scripts/pictures/render-svg.js';
import { rowLabel, tracePictureSpec } from '../../scripts/pictures/trace-picture.js';
import { findTracesV3, getTrace, getTraceV3, otlpAttribute, searchTraces, serverSpan, servicesOf, tag, type JaegerTrace } from '../jaeger-support/jaeger-api.js';

/**
 * "View duplicate traces in Jaeger", against a real Jaeger (the release examples/compose pins): the example's two
 * services export to it, the demo's scenarios run, and everything is read back through Jaeger's own query APIs,
 * as its UI and Grafana's Jaeger datasource read it.
 */
const DASHBOARD = fileURLToPath(new URL('../../dashboards/duplicate-traces.json', import.meta.url));
/** Spans leave the services every 100 ms and Jaeger stores them within 100 ms more; this is for a busy machine. */
const ARRIVAL_TIMEOUT_MS = 30_000;
const RUN = randomBytes(4).toString('hex');
const ACCOUNT = `acct_jaeger_${RUN}`;
/** Distinctive raw keys, so "never in any returned JSON" can be checked by substring. */
const KEYS = { replay: `rawkey-replay-${RUN}`, concurrent: `rawkey-concurrent-${RUN}`, mismatch: `rawkey-mismatch-${RUN}` };
const ID = { replay: correlationIdFor(ACCOUNT, KEYS.replay), concurrent: correlationIdFor(ACCOUNT, KEYS.concurrent), mismatch: correlationIdFor(ACCOUNT, KEYS.mismatch) };
const PAYMENT = { amount: 4200, currency: 'EUR' };

type Intent = keyof typeof KEYS;
/** What the client saw, in the order it was sent. */
const answers: Record<Intent, { status: number; replayed: boolean; instance?: string }[]> = { replay: [], concurrent: [], mismatch: [] };
/** Every JSON document Jaeger returned to the test: the raw keys must be in none of them. */
const returned: string[] = [];

async function send(intent: Intent, body: object = PAYMENT) {
  const response = await postJson(`${example.baseUrl}/payments`, body, { key: KEYS[intent], account: ACCOUNT });
  const instance = response.status >= 400 ? (JSON.parse(response.text) as { instance?: string }).instance : undefined;
  answers[intent].push({ status: response.status, replayed: response.headers.get(REPLAYED_HEADER) === 'true', ...(instance ? { instance } : {}) });
}

let jaeger: JaegerServer;
let example: RunningExample;
let startedMs: number;
const traces: Partial<Record<Intent, JaegerTrace[]>> = {};

/** Searches by correlation ID until every request of the intent is there, the original with its ledger spans. */
async function tracesOf(intent: Intent): Promise<JaegerTrace[]> {
  let seen = 0;
  return until(
    async () => {
      const { traces: found, raw } = await searchTraces(jaeger, { service: 'payments', tags: { [ATTR.CORRELATION_ID]: ID[intent] }, limit: 50 });
      seen = found.length;
      const complete =
        found.length === answers[intent].length && found.every((trace) => serverSpan(trace, 'payments') && tag(serverSpan(trace, 'payments')!.tags, ATTR.OUTCOME));
      const executed = found.find((trace) => tag(serverSpan(trace, 'payments')?.tags, ATTR.OUTCOME) === OUTCOME.EXECUTED);
      if (!complete || (executed && !serverSpan(executed, 'ledger'))) return undefined;
      returned.push(raw);
      return found;
    },
    () => `${intent}: ${seen} of ${answers[intent].length} traces in Jaeger`,
    ARRIVAL_TIMEOUT_MS,
  );
}

const outcomeOf = (trace: JaegerTrace) => tag(serverSpan(trace, 'payments')?.tags, ATTR.OUTCOME);
const byOutcome = (found: JaegerTrace[], outcome: string) => found.filter((trace) => outcomeOf(trace) === outcome);

describe.skipIf(!JAEGER_BINARY)(
  JAEGER_BINARY ? `npm start exporting to a real Jaeger ${JAEGER_RELEASE}, read back through its query APIs` : `Jaeger end-to-end (skipped: ${JAEGER_MISSING_REASON})`,
  () => {
    beforeAll(
      async () => {
        startedMs = Date.now();
        jaeger = await startJaeger();
        example = await startExample(jaeger.otlpUrl);
        // The demo's scenarios: a payment and two retries of it (replays); three copies at once; a key reused for another amount.
        await send('replay');
        await send('replay');
        await send('replay');
        await Promise.all([send('concurrent'), send('concurrent'), send('concurrent')]);
        await send('mismatch');
        await send('mismatch', { ...PAYMENT, amount: PAYMENT.amount + 1 });
        for (const intent of Object.keys(KEYS) as Intent[]) traces[intent] = await tracesOf(intent);
      },
      EXAMPLE_START_TIMEOUT_MS + 3 * ARRIVAL_TIMEOUT_MS + 30_000,
    );

    afterAll(async () => {
      await example?.stop();
      await jaeger?.stop();
    }, 40_000);

    it('runs the Jaeger release that examples/compose pins (the version the binary reports)', () => {
      expect(jaegerBinaryVersion(JAEGER_BINARY!)).toBe(`v${JAEGER_RELEASE}`);
    });

    it("finds the trace of a client's problem answer with one tag search on its instance (idempotency.problem.instance)", async () => {
      const instance = answers.mismatch[1]!.instance!;
      expect(instance).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
      const { traces: found, raw } = await searchTraces(jaeger, { service: 'payments', tags: { [ATTR.PROBLEM_INSTANCE]: instance }, limit: 20 });
      returned.push(raw);
      expect(found).toHaveLength(1);
      const span = serverSpan(found[0]!, 'payments')!;
      expect(tag(span.tags, ATTR.OUTCOME)).toBe(OUTCOME.KEY_REUSED);
      expect(tag(span.tags, ATTR.PROBLEM_TYPE)).toBe('key-reused');
      expect(tag(span.tags, ATTR.CORRELATION_ID)).toBe(ID.mismatch);
    });

    it('answers the scenarios as the demo expects: 201 then two replays; one execution of three copies; 201 then 422', () => {
      expect(answers.replay).toEqual([
        { status: 201, replayed: false },
        { status: 201, replayed: true },
        { status: 201, replayed: true },
      ]);
      expect(answers.concurrent.filter((answer) => answer.status === 201 && !answer.replayed)).toHaveLength(1);
      expect(answers.mismatch.map((answer) => answer.status)).toEqual([201, 422]);
      expect(answers.replay.every((answer) => answer.instance === undefined)).toBe(true);
    });

    it('finds the original and every retry by tag idempotency.correlation_id, with spans of both services', () => {
      const found = traces.replay!;
      expect(found).toHaveLength(3);
      expect(found.map(outcomeOf).sort()).toEqual([OUTCOME.EXECUTED, OUTCOME.REPLAYED, OUTCOME.REPLAYED]);
      const original = byOutcome(found, OUTCOME.EXECUTED)[0]!;
      expect(servicesOf(original)).toEqual(new Set(['payments', 'ledger']));
      // Every span of every trace of the intent carries the ID, the ledger's too (through baggage).
      const unstamped = found.flatMap((trace) => trace.spans.filter((span) => tag(span.tags, ATTR.CORRELATION_ID) !== ID.replay).map((span) => span.operationName));
      expect(unstamped).toEqual([]);
    });

    it("shows the idempotency.duplicate event as a log on each retry's server span, with its reason and the original trace ID", () => {
      const original = byOutcome(traces.replay!, OUTCOME.EXECUTED)[0]!;
      for (const retry of byOutcome(traces.replay!, OUTCOME.REPLAYED)) {
        const log = serverSpan(retry, 'payments')!.logs.find((candidate) => tag(candidate.fields, 'event') === EVENT.DUPLICATE);
        expect(tag(log?.fields, ATTR.REASON)).toBe(OUTCOME.REPLAYED);
        expect(tag(log?.fields, ATTR.ORIGINAL_TRACE_ID)).toBe(original.traceID);
      }
    });

    it("references the original server span from each replay's server span (FOLLOWS_FROM in /api/traces, a link in /api/v3)", async () => {
      const original = byOutcome(traces.replay!, OUTCOME.EXECUTED)[0]!;
      const originalSpan = serverSpan(original, 'payments')!;
      for (const retry of byOutcome(traces.replay!, OUTCOME.REPLAYED)) {
        const references = serverSpan(retry, 'payments')!.references.filter((reference) => reference.refType === 'FOLLOWS_FROM');
        expect(references.map((reference) => [reference.traceID, reference.spanID])).toEqual([[original.traceID, originalSpan.spanID]]);

        const { spans, raw } = await getTraceV3(jaeger, retry.traceID);
        returned.push(raw);
        const server = spans.find((span) => span.service === 'payments' && span.kind === 2)!;
        expect(server.links?.map((link) => [link.traceId, link.spanId])).toEqual([[original.traceID, originalSpan.spanID]]);
        expect(server.events?.map((event) => event.name)).toContain(EVENT.DUPLICATE);
      }
    });

    it('draws the first retry beside its original, with the duplicate event and the link, into docs/images/duplicate-trace.svg', async () => {
      const original = byOutcome(traces.replay!, OUTCOME.EXECUTED)[0]!;
      const [retry] = byOutcome(traces.replay!, OUTCOME.REPLAYED).sort((a, b) => serverSpan(a, 'payments')!.startTime - serverSpan(b, 'payments')!.startTime);
      const picture = duplicatePicture(original, retry!, 'payments');
      const svg = await renderSvg(tracePictureSpec(picture));
      const texts = svgTexts(svg);
      // Every span of both traces is drawn under its name, the event and the link are labelled.
      expect(picture.spans).toHaveLength(original.spans.length + retry!.spans.length);
      expect(texts).toEqual(expect.arrayContaining([...picture.spans.map(rowLabel), `${EVENT.DUPLICATE} (reason=${OUTCOME.REPLAYED})`, picture.links[0]!.label]));
      expect(picture.links.map((link) => link.toSpanId)).toEqual([serverSpan(original, 'payments')!.spanID]);
      maybeUpdatePicture(imageFile('duplicate-trace.svg'), svg);
    });

    it('returns the same traces of the intent from the /api/v3 search as from the /api/traces tag search', async () => {
      const { spans, raw } = await findTracesV3(jaeger, 'payments', startedMs - 60_000);
      returned.push(raw);
      const v3 = new Set(spans.filter((span) => otlpAttribute(span.attributes, ATTR.CORRELATION_ID) === ID.replay).map((span) => span.traceId));
      expect(v3).toEqual(new Set(traces.replay!.map((trace) => trace.traceID)));
    });

    it('keeps three concurrent copies under one correlation ID: one execution, the others answered from its record with the event', () => {
      const found = traces.concurrent!;
      expect(found).toHaveLength(3);
      expect(byOutcome(found, OUTCOME.EXECUTED)).toHaveLength(1);
      const original = byOutcome(found, OUTCOME.EXECUTED)[0]!;
      for (const duplicate of found.filter((trace) => trace !== original)) {
        expect([OUTCOME.REPLAYED, OUTCOME.IN_PROGRESS]).toContain(outcomeOf(duplicate));
        const log = serverSpan(duplicate, 'payments')!.logs.find((candidate) => tag(candidate.fields, 'event') === EVENT.DUPLICATE);
        expect(tag(log?.fields, ATTR.REASON)).toBe(outcomeOf(duplicate));
        expect(tag(log?.fields, ATTR.ORIGINAL_TRACE_ID)).toBe(original.traceID);
      }
    });

    it('answers every Jaeger query of dashboards/duplicate-traces.json, sent as Grafana sends it, with the expected traces', async () => {
      const queries = jaegerPanelQueries(
        DASHBOARD,
        { jaeger_service: 'payments', correlation_id: ID.replay, jaeger: 'jaeger' },
        { fromMs: Date.now() - 3_600_000, toMs: Date.now() },
      );
      const all = Object.values(traces).flat();
      const client = Object.values(answers).flat();
      // What the client saw, independently of Jaeger: the count of each outcome's traces.
      const expectedCount: Record<string, number> = {
        [`${ATTR.CORRELATION_ID}=${ID.replay}`]: 3,
        [`${ATTR.OUTCOME}=${OUTCOME.REPLAYED}`]: client.filter((answer) => answer.replayed).length,
        [`${ATTR.OUTCOME}=${OUTCOME.IN_PROGRESS}`]: client.filter((answer) => answer.status === 409).length,
        [`${ATTR.OUTCOME}=${OUTCOME.KEY_REUSED}`]: client.filter((answer) => answer.status === 422).length,
      };
      const summary: string[] = [];
      expect(queries.map((query) => query.kind)).toEqual(['search', 'search', 'search', 'search']);
      for (const query of queries) {
        const { params, traces: found, raw } = await searchTraces(jaeger, query.search!);
        returned.push(raw);
        const [[key, value]] = Object.entries(query.search!.tags!) as [[string, string]];
        const expected = all.filter((trace) => trace.spans.some((span) => tag(span.tags, key) === value)).map((trace) => trace.traceID);
        expect(expected, query.title).toHaveLength(expectedCount[`${key}=${value}`]!);
        expect(found.map((trace) => trace.traceID).sort(), query.title).toEqual(expected.sort());
        // The Trace ID column opens each trace: Jaeger's trace page loads /api/traces/<id>.
        for (const trace of found) expect((await getTrace(jaeger, trace.traceID)).trace.spans.length).toBeGreaterThan(0);
        summary.push(`${query.title}: GET /api/traces?${new URLSearchParams(params).toString()} -> ${found.length} traces`);
      }
      console.log(summary.join('\n'));
    });

    it('draws every panel of dashboards/duplicate-traces.json with the traces its search returns into docs/images/dashboard-duplicate-traces.svg', async () => {
      const variables = { jaeger_service: 'payments', correlation_id: ID.replay, jaeger: 'jaeger' };
      const preview = await gatherJaegerPreview(jaeger, DASHBOARD, variables, { fromMs: startedMs - 60_000, toMs: Date.now() });
      const svg = await renderSvg(dashboardPreviewSpec(preview));
      const texts = svgTexts(svg);
      for (const panel of preview.panels) expect(texts, panel.title).toContain(panel.title);
      // The correlation ID's table lists the intent's three traces, by the first half of their IDs.
      const intent = preview.panels.find((panel) => panel.title.includes(ID.replay))!;
      expect(new Set(intent.series.map((row) => row.name))).toEqual(new Set(traces.replay!.map((trace) => trace.traceID.slice(0, 16))));
      expect(texts).toEqual(expect.arrayContaining([...intent.series.map((row) => row.name), 'payments: POST /payments']));
      maybeUpdatePicture(imageFile('dashboard-duplicate-traces.svg'), svg);
    });

    it('never shows the raw key in anything Jaeger returns, only its hash', async () => {
      const services = await jaeger.get<unknown>('/api/services');
      returned.push(JSON.stringify(services));
      expect(returned.length).toBeGreaterThan(5);
      for (const document of returned) for (const key of Object.values(KEYS)) expect(document.includes(key)).toBe(false);
      const hashed = traces.replay!.map((trace) => tag(serverSpan(trace, 'payments')!.tags, ATTR.KEY_HASH));
      expect(new Set(hashed).size).toBe(1);
      expect(hashed[0]).toMatch(/^[0-9a-f]{32}$/);
    });
  },
);
