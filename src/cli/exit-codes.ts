/**
 * Exit codes of the operator CLI. Scripts may rely on them; they never change meaning.
 *
 * | code | meaning                                                                          |
 * | ---- | -------------------------------------------------------------------------------- |
 * | 0    | success                                                                          |
 * | 1    | `inspect`, `forget`: no record for that scope and key (or that problem instance)  |
 * | 2    | usage error: unknown command or flag, bad value, DATABASE_URL unset or malformed |
 * |      | or a flag that does not fit the table (`migrate --partitioned` on a plain table, |
 * |      | `migrate` without it on a partitioned one, partition flags of `sweep` on a plain |
 * |      | table, `migrate --distribute` without Citus or on a table distributed by the     |
 * |      | other column)                                                                    |
 * | 3    | database unavailable: unreachable, login refused, no such database, connection   |
 * |      | lost mid-command, or the records table is missing (run `migrate`)                |
 * | 4    | any other failure (an unexpected SQL error, a missing privilege)                 |
 * | 5    | `forget` refused: the record is in progress (a live lease, or a lapsed one       |
 * |      | without `--force`)                                                               |
 */
export const EXIT = {
  OK: 0,
  NOT_FOUND: 1,
  USAGE: 2,
  DATABASE_UNAVAILABLE: 3,
  FAILED: 4,
  REFUSED: 5,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
