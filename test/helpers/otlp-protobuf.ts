/**
 * Just enough of OTLP/HTTP protobuf (opentelemetry-proto, trace/v1) to read what an exporter sends: the spans'
 * IDs, names, attributes, events and links. A test receiver decodes with it, so an app can keep the
 * `exporter-trace-otlp-proto` exporter the README shows. Field numbers are those of trace.proto and common.proto.
 */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  name: string;
  /** SpanKind as OTLP numbers it: 2 server, 3 client. */
  kind: number;
  attributes: Record<string, string | number | boolean>;
  events: Array<{ name: string; attributes: Record<string, string | number | boolean> }>;
  links: Array<{ traceId: string; spanId: string }>;
}

type Fields = Map<number, Array<bigint | Buffer>>;

/** Every span of an ExportTraceServiceRequest (resource_spans = 1 > scope_spans = 2 > spans = 2). */
export function decodeTraceRequest(body: Buffer): OtlpSpan[] {
  return messages(fields(body), 1).flatMap((resourceSpans) => messages(resourceSpans, 2).flatMap((scopeSpans) => messages(scopeSpans, 2).map(decodeSpan)));
}

function decodeSpan(span: Fields): OtlpSpan {
  return {
    traceId: bytes(span, 1).toString('hex'),
    spanId: bytes(span, 2).toString('hex'),
    name: bytes(span, 5).toString('utf8'),
    kind: Number(varint(span, 6)),
    attributes: attributes(messages(span, 9)),
    events: messages(span, 11).map((event) => ({ name: bytes(event, 2).toString('utf8'), attributes: attributes(messages(event, 3)) })),
    links: messages(span, 13).map((link) => ({ traceId: bytes(link, 1).toString('hex'), spanId: bytes(link, 2).toString('hex') })),
  };
}

/** KeyValue (key = 1, value = 2: AnyValue with string 1, bool 2, int 3, double 4). */
function attributes(keyValues: Fields[]): Record<string, string | number | boolean> {
  const result: Record<string, string | number | boolean> = {};
  for (const keyValue of keyValues) {
    const value = messages(keyValue, 2)[0];
    if (!value) continue;
    const key = bytes(keyValue, 1).toString('utf8');
    if (value.has(1)) result[key] = bytes(value, 1).toString('utf8');
    else if (value.has(2)) result[key] = varint(value, 2) !== 0n;
    else if (value.has(3)) result[key] = Number(BigInt.asIntN(64, varint(value, 3)));
    else if (value.has(4)) result[key] = bytes(value, 4).readDoubleLE(0);
  }
  return result;
}

const messages = (message: Fields, field: number): Fields[] => (message.get(field) ?? []).map((value) => fields(value as Buffer));
const bytes = (message: Fields, field: number): Buffer => (message.get(field)?.[0] as Buffer | undefined) ?? Buffer.alloc(0);
const varint = (message: Fields, field: number): bigint => (message.get(field)?.[0] as bigint | undefined) ?? 0n;

/** The protobuf wire format: varints (type 0), 64-bit (1), length-delimited (2) and 32-bit (5) fields. */
function fields(buffer: Buffer): Fields {
  const result: Fields = new Map();
  let offset = 0;
  const readVarint = (): bigint => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = buffer[offset++]!;
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  while (offset < buffer.length) {
    const tag = Number(readVarint());
    const [field, wireType] = [tag >>> 3, tag & 7];
    let value: bigint | Buffer;
    if (wireType === 0) value = readVarint();
    else if (wireType === 1 || wireType === 5) value = buffer.subarray(offset, (offset += wireType === 1 ? 8 : 4));
    else if (wireType === 2) {
      const length = Number(readVarint());
      value = buffer.subarray(offset, (offset += length));
    } else throw new Error(`unsupported protobuf wire type ${wireType} (field ${field})`);
    result.set(field, [...(result.get(field) ?? []), value]);
  }
  return result;
}
