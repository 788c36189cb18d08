import type { JaegerServer } from './jaeger.js';

/**
 * The two query APIs of Jaeger the test reads, as they answer: the internal JSON API (`/api/traces`), which
 * Jaeger's UI and Grafana's Jaeger datasource search with, and the OTLP-shaped `/api/v3`.
 */

export interface JaegerTag {
  key: string;
  type: string;
  value: string | number | boolean;
}
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  /** Microseconds since the epoch, and the span's length in microseconds. */
  startTime: number;
  duration: number;
  /** CHILD_OF for the parent; an OTel span link is a FOLLOWS_FROM reference. */
  references: { refType: 'CHILD_OF' | 'FOLLOWS_FROM'; traceID: string; spanID: string }[];
  tags: JaegerTag[];
  /** OTel span events; the event name is the `event` field. */
  logs: { timestamp: number; fields: JaegerTag[] }[];
  processID: string;
}
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: JaegerTag[] }>;
}

export const tag = (tags: readonly JaegerTag[] | undefined, key: string) => tags?.find((candidate) => candidate.key === key)?.value;
export const serviceOf = (trace: JaegerTrace, span: JaegerSpan) => trace.processes[span.processID]?.serviceName;
export const servicesOf = (trace: JaegerTrace) => new Set(trace.spans.map((span) => serviceOf(trace, span)));
/** The entry span of a service in the trace: server kind, no parent in the same service. */
export const serverSpan = (trace: JaegerTrace, service: string) =>
  trace.spans.find((span) => serviceOf(trace, span) === service && tag(span.tags, 'span.kind') === 'server');

export interface SearchParams {
  service: string;
  /** Span tags every returned trace must have somewhere (`tags={"k":"v"}` as JSON, as the UI and Grafana send). */
  tags?: Record<string, string>;
  limit?: number;
  /** Epoch microseconds, as Grafana sends them with `lookback=custom`. */
  startUs?: number;
  endUs?: number;
}

/** `GET /api/traces?service=…&tags=…`: the search of Jaeger's UI and of Grafana's Jaeger datasource. */
export async function searchTraces(jaeger: JaegerServer, search: SearchParams): Promise<{ params: Record<string, string>; traces: JaegerTrace[]; raw: string }> {
  const params: Record<string, string> = { service: search.service };
  if (search.tags) params.tags = JSON.stringify(search.tags);
  if (search.limit !== undefined) params.limit = String(search.limit);
  if (search.startUs !== undefined) Object.assign(params, { start: String(search.startUs), end: String(search.endUs), lookback: 'custom' });
  const body = await jaeger.get<{ data: JaegerTrace[] | null; errors: unknown }>('/api/traces', params);
  if (body.errors) throw new Error(`Jaeger search ${JSON.stringify(params)}: ${JSON.stringify(body.errors)}`);
  return { params, traces: body.data ?? [], raw: JSON.stringify(body) };
}

/** `GET /api/traces/<id>`: one trace, as the UI's trace page and Grafana's trace ID query load it. */
export async function getTrace(jaeger: JaegerServer, traceId: string): Promise<{ trace: JaegerTrace; raw: string }> {
  const body = await jaeger.get<{ data: JaegerTrace[] }>(`/api/traces/${traceId}`);
  return { trace: body.data[0]!, raw: JSON.stringify(body) };
}

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string; doubleValue?: number; boolValue?: boolean };
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  name: string;
  kind: number;
  attributes?: OtlpAttribute[];
  events?: { name: string; attributes?: OtlpAttribute[] }[];
  links?: { traceId: string; spanId: string; attributes?: OtlpAttribute[] }[];
  service: string;
}
export const otlpAttribute = (attributes: readonly OtlpAttribute[] | undefined, key: string) => {
  const value = attributes?.find((candidate) => candidate.key === key)?.value;
  return value?.stringValue ?? value?.intValue ?? value?.doubleValue ?? value?.boolValue;
};

type OtlpDocument = { result: { resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: Omit<OtlpSpan, 'service'>[] }[] }[] } };

function flatten(document: OtlpDocument): OtlpSpan[] {
  return document.result.resourceSpans.flatMap((resource) =>
    resource.scopeSpans.flatMap((scope) => scope.spans.map((span) => ({ ...span, service: String(otlpAttribute(resource.resource.attributes, 'service.name')) }))),
  );
}

/** `GET /api/v3/traces/<id>`: one trace in OTLP JSON. */
export async function getTraceV3(jaeger: JaegerServer, traceId: string): Promise<{ spans: OtlpSpan[]; raw: string }> {
  const document = await jaeger.get<OtlpDocument>(`/api/v3/traces/${traceId}`);
  return { spans: flatten(document), raw: JSON.stringify(document) };
}

/**
 * `GET /api/v3/traces?query.service_name=…`: the v3 search. Its HTTP gateway takes no attribute filter in
 * v2.13 (only gRPC does), so it is asked by service and time window.
 */
export async function findTracesV3(jaeger: JaegerServer, service: string, sinceMs: number): Promise<{ spans: OtlpSpan[]; raw: string }> {
  const document = await jaeger.get<OtlpDocument>('/api/v3/traces', {
    'query.service_name': service,
    'query.start_time_min': new Date(sinceMs).toISOString(),
    'query.start_time_max': new Date(Date.now() + 60_000).toISOString(),
    'query.num_traces': '1000',
  });
  return { spans: flatten(document), raw: JSON.stringify(document) };
}
