import type { Builder, Dataquery } from '@grafana/grafana-foundation-sdk/cog';
import type { DataSourceRef } from '@grafana/grafana-foundation-sdk/common';

/**
 * A Jaeger search query for Grafana's built-in Jaeger datasource. The foundation SDK ships no Jaeger
 * builder, so this follows its documented custom query pattern. Field names are those of the
 * datasource's `JaegerQuery` (grafana/grafana, public/app/plugins/datasource/jaeger/types.ts); the
 * datasource interpolates dashboard variables in `service` and `tags`, and runs only a panel's first
 * query, so each panel holds one.
 */
export interface JaegerQuery {
  refId?: string;
  hide?: boolean;
  datasource?: DataSourceRef;
  /** `search` asks `/api/traces` with the fields below and returns a table of traces. */
  queryType: 'search';
  /** Required by Jaeger's search API. */
  service: string;
  operation?: string;
  /** Span tags in logfmt, `idempotency.outcome=replayed`. */
  tags?: string;
  minDuration?: string;
  maxDuration?: string;
  limit?: number;
  _implementsDataqueryVariant(): void;
}

export class JaegerSearchBuilder implements Builder<Dataquery> {
  private readonly internal: JaegerQuery;

  constructor(service: string) {
    this.internal = { queryType: 'search', service, _implementsDataqueryVariant() {} };
  }

  build(): JaegerQuery {
    return this.internal;
  }

  refId(refId: string): this {
    this.internal.refId = refId;
    return this;
  }

  datasource(datasource: DataSourceRef): this {
    this.internal.datasource = datasource;
    return this;
  }

  /** Span tags every returned trace must have, as `key=value` pairs. */
  tags(tags: Readonly<Record<string, string>>): this {
    this.internal.tags = Object.entries(tags)
      .map(([key, value]) => `${key}=${value}`)
      .join(' ');
    return this;
  }

  limit(limit: number): this {
    this.internal.limit = limit;
    return this;
  }
}
