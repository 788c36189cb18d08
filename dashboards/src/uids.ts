/** Dashboard uids: stable, so links between the two dashboards and bookmarks survive regeneration. */
export const OVERVIEW_UID = 'koa-idempotency-overview';
export const DUPLICATE_TRACES_UID = 'koa-idempotency-duplicate-traces';
export const OVERVIEW_UTF8_UID = 'koa-idempotency-overview-utf8';
