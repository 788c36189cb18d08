import type { Context as OtelContext } from '@opentelemetry/api';

/**
 * Placeholder seam for stamping spans that started before the middleware (filled in by the span
 * processor module). Kept as its own module so the request telemetry does not depend on the SDK.
 */
export function stampActiveRequest(_context: OtelContext, _correlationId: string): void {}
