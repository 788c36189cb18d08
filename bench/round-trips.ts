import pg from 'pg';

/**
 * Counts SQL round trips in this process: a `pg.Client#query` call is one request/response exchange with
 * the server (a pool query goes through a client; a multi-statement simple query is one call), unless the
 * client pipelines (`pipeline: true`) and another query of it is still on the wire: that one rides along
 * in the same round trip. Counting at the client is exact and needs no server extension.
 */
let roundTrips = 0;

/** The parts of a node-postgres client that tell whether a query of it is in flight (lib/client.js). */
interface ClientQueues {
  pipeline?: boolean;
  _activeQuery?: unknown;
  _sentQueryQueue?: unknown[];
  _queryQueue?: unknown[];
}

function inFlight(client: ClientQueues): boolean {
  return Boolean(client._activeQuery) || (client._sentQueryQueue?.length ?? 0) > 0 || (client._queryQueue?.length ?? 0) > 0;
}

export function countRoundTrips(): void {
  const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function countedQuery(this: ClientQueues, ...args: unknown[]) {
    if (!(this.pipeline && inFlight(this))) roundTrips++;
    return original.apply(this, args);
  };
}

export function roundTripsSoFar(): number {
  return roundTrips;
}
