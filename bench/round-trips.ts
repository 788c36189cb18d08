import pg from 'pg';

/**
 * Counts SQL round trips in this process: every `pg.Client#query` call is one request/response
 * exchange with the server (a pool query goes through a client; a multi-statement simple query is
 * one call). Counting at the client is exact and needs no server extension.
 */
let roundTrips = 0;

export function countRoundTrips(): void {
  const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function countedQuery(this: unknown, ...args: unknown[]) {
    roundTrips++;
    return original.apply(this, args);
  };
}

export function roundTripsSoFar(): number {
  return roundTrips;
}
