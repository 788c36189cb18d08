CREATE SCHEMA IF NOT EXISTS "public";

CREATE TABLE IF NOT EXISTS "public"."idempotency_records" (
  scope               text        NOT NULL,
  key                 text        NOT NULL,
  status              text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
  fingerprint         text        NOT NULL,
  fingerprint_version smallint    NOT NULL,
  fence               bigint      NOT NULL,
  attempt             integer     NOT NULL DEFAULT 1,
  steps               jsonb       NOT NULL DEFAULT '{}'::jsonb,
  replayable          boolean,
  response_status     smallint,
  response_headers    jsonb,
  response_body       bytea,
  correlation_id      text,
  traceparent         text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  completed_at        timestamptz,
  lease_expires_at    timestamptz,
  expires_at          timestamptz NOT NULL,
  PRIMARY KEY (scope, key)
) WITH (fillfactor = 80);

CREATE INDEX IF NOT EXISTS "idempotency_records_expires_at_idx" ON "public"."idempotency_records" USING brin (expires_at);
