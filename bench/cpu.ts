import { readFileSync } from 'node:fs';
import type pg from 'pg';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ), 100 on Linux. */
const TICKS_PER_SECOND = 100;

/**
 * CPU time of the Postgres backends that serve one pool. On a CPU-bound machine throughput follows the
 * CPU spent per request, and unlike latency this does not swing with what other processes are doing.
 * Reads /proc, so it reports 0 where Postgres runs on another host or /proc is absent.
 */
export class BackendCpu {
  readonly #pids = new Set<number>();

  constructor(pool: pg.Pool) {
    // A client learns its backend's process id from the server's BackendKeyData message at connect.
    pool.on('connect', (client) => {
      const pid = (client as unknown as { processID?: number }).processID;
      if (pid) this.#pids.add(pid);
    });
  }

  /** Total user + system CPU milliseconds of the known backends (exited backends drop out). */
  totalMs(): number {
    let ticks = 0;
    for (const pid of this.#pids) {
      try {
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        ticks += Number(fields[11]) + Number(fields[12]);
      } catch {
        this.#pids.delete(pid);
      }
    }
    return (ticks * 1000) / TICKS_PER_SECOND;
  }
}
