/**
 * The record a lease owns, in progress, as every write under a lease finds it: $1 scope, $2 key, $3 fence.
 * A takeover has raised the fence, so a worker that lost its lease matches nothing.
 */
export const OWNED_BY_LEASE = `scope = $1 AND key = $2 AND fence = $3::bigint AND status = 'in_progress'`;
