import type { TableName } from '../schema.js';

/** What a store's statements are built for, once per store: its table, its layout, and when its writes notify. */
export interface PrimitiveOptions {
  table: TableName;
  /** The table is partitioned by time (partitioned-schema.ts): claims go through its claim function. */
  partitioned: boolean;
  /**
   * When statements notify waiters. `'whenWaited'`: only while a waiter announces itself with the waiter
   * announcement (waiter-announcement.ts), on a listening session of its own (NOTIFY takes a cluster-wide lock
   * at commit and serialises every commit that sent one). `'always'`: when waiters cannot announce themselves
   * (PGlite's single session).
   */
  notify: 'whenWaited' | 'always';
}

/**
 * A statement of the store: its text, and the name of its primitive, which names it as a prepared statement on
 * every connection (pg-database.ts). A primitive's file holds this with the values it binds and what it reads back.
 */
export interface NamedStatement {
  readonly name: string;
  readonly text: string;
}
