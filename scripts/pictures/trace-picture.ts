import type { TopLevelSpec } from 'vega-lite';

/**
 * A duplicate's trace beside its original on one time axis, as Jaeger returned them in test/system/jaeger-e2e.test.ts:
 * every span a bar on its own row (indented under its parent), the idempotency.duplicate event a mark on the
 * retry's server span, and the span link an arrow from that span back to the original's server span.
 */

export interface PictureSpan {
  /** Which trace the span belongs to: shown before the span name (`original`, `retry`). */
  trace: string;
  service: string;
  name: string;
  /** Milliseconds since the original trace started. */
  startMs: number;
  endMs: number;
  /** Identifies the span for events and links. */
  spanId: string;
}

export interface PictureEvent {
  spanId: string;
  name: string;
  /** What the event says, e.g. `reason=replayed`. */
  detail: string;
  atMs: number;
}

export interface PictureLink {
  fromSpanId: string;
  toSpanId: string;
  label: string;
}

export interface TracePicture {
  title: string;
  subtitle: string | string[];
  spans: PictureSpan[];
  events: PictureEvent[];
  links: PictureLink[];
}

const ROW_HEIGHT_PX = 22;
const BAR_HALF_HEIGHT = 0.32;

/**
 * The row label of a span: its trace, its service and its name. Not indented by depth: the labels are right-aligned
 * against the axis, where an indent would only open a gap; the rows' tree order shows the nesting.
 */
export const rowLabel = (span: PictureSpan) => `${span.trace} · ${span.service} · ${span.name}`;

export function tracePictureSpec(picture: TracePicture): TopLevelSpec {
  const rowOf = new Map(picture.spans.map((span, row) => [span.spanId, row]));
  const row = (spanId: string) => {
    const found = rowOf.get(spanId);
    if (found === undefined) throw new Error(`no span ${spanId} in the picture`);
    return found;
  };
  const bars = picture.spans.map((span, index) => ({
    ...span,
    label: rowLabel(span),
    top: index - BAR_HALF_HEIGHT,
    bottom: index + BAR_HALF_HEIGHT,
    durationText: `${(span.endMs - span.startMs).toFixed(1)} ms`,
  }));
  const events = picture.events.map((event) => ({ ...event, row: row(event.spanId), text: `${event.name} (${event.detail})` }));
  const links = picture.links.map((link) => {
    const from = picture.spans[row(link.fromSpanId)]!;
    const to = picture.spans[row(link.toSpanId)]!;
    return { x: from.startMs, y: row(link.fromSpanId), x2: to.startMs, y2: row(link.toSpanId), label: link.label };
  });
  const labels = bars.map((bar) => bar.label);
  // Rows are numbers (a continuous scale), so the link can run from one row to another; the axis shows their labels.
  const y = {
    type: 'quantitative' as const,
    title: null,
    scale: { domain: [picture.spans.length - 0.5, -0.5], nice: false, zero: false },
    axis: { values: labels.map((_, index) => index), labelExpr: 'rowLabels[datum.value]', grid: false, labelLimit: 0, labelFontSize: 11 },
  };
  const x = { type: 'quantitative' as const, title: 'milliseconds since the original request started' };
  return {
    title: { text: picture.title, subtitle: picture.subtitle },
    width: 560,
    height: ROW_HEIGHT_PX * picture.spans.length,
    params: [{ name: 'rowLabels', value: labels }],
    layer: [
      {
        data: { values: bars },
        mark: { type: 'rect', cornerRadius: 2 },
        encoding: {
          x: { field: 'startMs', ...x },
          x2: { field: 'endMs' },
          y: { field: 'top', ...y },
          y2: { field: 'bottom' },
          color: { field: 'service', type: 'nominal', title: 'service', legend: { orient: 'bottom' } },
        },
      },
      {
        data: { values: bars },
        mark: { type: 'text', align: 'left', dx: 4, fontSize: 9, color: '#333' },
        encoding: { x: { field: 'endMs', ...x }, y: { field: 'top', ...y }, yOffset: { value: 7 }, text: { field: 'durationText' } },
      },
      {
        data: { values: links },
        mark: { type: 'rule', strokeDash: [5, 3], strokeWidth: 1.5, color: '#b03060' },
        encoding: { x: { field: 'x', ...x }, x2: { field: 'x2' }, y: { field: 'y', ...y }, y2: { field: 'y2' } },
      },
      {
        data: { values: links },
        mark: { type: 'point', shape: 'triangle-up', size: 70, filled: true, color: '#b03060' },
        encoding: { x: { field: 'x2', ...x }, y: { field: 'y2', ...y }, yOffset: { value: 9 } },
      },
      {
        data: { values: links },
        mark: { type: 'text', align: 'right', dx: -6, fontSize: 10, color: '#b03060', fontStyle: 'italic' },
        encoding: { x: { field: 'x', ...x }, y: { field: 'y', ...y }, yOffset: { value: -14 }, text: { field: 'label' } },
      },
      {
        data: { values: events },
        mark: { type: 'point', shape: 'diamond', size: 110, filled: true, color: '#d62728', stroke: 'white' },
        encoding: { x: { field: 'atMs', ...x }, y: { field: 'row', ...y } },
      },
      {
        data: { values: events },
        mark: { type: 'text', align: 'left', dx: 8, dy: 12, fontSize: 10, color: '#d62728' },
        encoding: { x: { field: 'atMs', ...x }, y: { field: 'row', ...y }, text: { field: 'text' } },
      },
    ],
  };
}
