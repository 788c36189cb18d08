CREATE SCHEMA IF NOT EXISTS "public";

CREATE SEQUENCE IF NOT EXISTS "public"."idempotency_records_fence_seq";

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
  PRIMARY KEY (scope, key, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX IF NOT EXISTS "idempotency_records_expires_at_idx" ON "public"."idempotency_records" (expires_at);

CREATE TABLE IF NOT EXISTS "public"."idempotency_records_default" PARTITION OF "public"."idempotency_records" DEFAULT;

CREATE OR REPLACE FUNCTION "public"."idempotency_records_claim"(
  p_scope text, p_key text, p_fingerprint text, p_fingerprint_version smallint,
  p_lease_ms float8, p_ttl_seconds float8, p_correlation_id text, p_traceparent text, p_wait boolean
) RETURNS TABLE (acquired boolean, claimed boolean, rec "public"."idempotency_records")
LANGUAGE plpgsql VOLATILE
AS $claim$
DECLARE
  v_row "public"."idempotency_records";
  v_fence bigint;
  v_lock_key bigint := hashtextextended('"public"."idempotency_records"' || chr(10) || p_scope || chr(10) || p_key, 0);
  v_lease_expires_at timestamptz := now() + make_interval(secs => p_lease_ms / 1000);
  v_expires_at timestamptz := now() + make_interval(secs => p_ttl_seconds);
BEGIN
  SELECT * INTO v_row FROM "public"."idempotency_records" r WHERE r.scope = p_scope AND r.key = p_key;
  IF FOUND AND NOT (v_row.expires_at <= now() OR (v_row.status = 'in_progress' AND v_row.lease_expires_at <= now() AND split_part(v_row.fingerprint, ' ', 1) = split_part(p_fingerprint, ' ', 1))) THEN
    RETURN QUERY SELECT true, false, v_row;
    RETURN;
  END IF;

  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock_key);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock_key) THEN
    RETURN QUERY SELECT false, NULL::boolean, NULL::"public"."idempotency_records";
    RETURN;
  END IF;

  SELECT * INTO v_row FROM "public"."idempotency_records" r WHERE r.scope = p_scope AND r.key = p_key FOR UPDATE;
  IF FOUND AND NOT (v_row.expires_at <= now() OR (v_row.status = 'in_progress' AND v_row.lease_expires_at <= now() AND split_part(v_row.fingerprint, ' ', 1) = split_part(p_fingerprint, ' ', 1))) THEN
    RETURN QUERY SELECT true, false, v_row;
    RETURN;
  END IF;

  -- Drawn here, on the node running the function: Citus refuses a volatile call inside an UPDATE of a
  -- distributed table, and the sequence exists on that node only (docs/scale-out.md).
  v_fence := nextval('"public"."idempotency_records_fence_seq"');
  IF FOUND AND v_row.status = 'in_progress' AND v_row.expires_at > now() THEN
    UPDATE "public"."idempotency_records" r SET
      fingerprint_version = p_fingerprint_version,
      fence = v_fence,
      attempt = r.attempt + 1,
      lease_expires_at = v_lease_expires_at,
      expires_at = v_expires_at,
      correlation_id = p_correlation_id,
      traceparent = p_traceparent
    WHERE r.scope = p_scope AND r.key = p_key AND r.created_at = v_row.created_at
    RETURNING * INTO v_row;
  ELSE
    IF FOUND THEN
      DELETE FROM "public"."idempotency_records" r WHERE r.scope = p_scope AND r.key = p_key AND r.created_at = v_row.created_at;
    END IF;
    INSERT INTO "public"."idempotency_records" (scope, key, fingerprint, fingerprint_version, status, fence, attempt,
        lease_expires_at, expires_at, correlation_id, traceparent)
      VALUES (p_scope, p_key, p_fingerprint, p_fingerprint_version, 'in_progress', v_fence, 1,
        v_lease_expires_at, v_expires_at, p_correlation_id, p_traceparent)
      RETURNING * INTO v_row;
  END IF;
  RETURN QUERY SELECT true, true, v_row;
END
$claim$;
