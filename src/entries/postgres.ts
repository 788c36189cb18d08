/**
 * koa-idempotency/postgres: the Postgres store (a server through `pg`, or PGlite), its adapters, and the schema
 * SQL for a migration tool of your own.
 */
export { PostgresStore } from '../store/postgres-store.js';
export type { PostgresStoreOptions, SweepOptions, SweepReport, ForgetResult, MigrateOptions, DistributionOptions } from '../store/postgres-store.js';
export { DEFAULT_PARTITION_INTERVAL_SECONDS, DEFAULT_PREMADE_PARTITIONS, DEFAULT_PARTITION_LOCK_TIMEOUT_MS } from '../store/partition-maintenance.js';
export type { PartitioningOptions, PartitionReport } from '../store/partition-maintenance.js';
export { fromPgPool } from '../store/pg-database.js';
export { fromPGlite, type PGliteLike, type PGliteTransactionLike } from '../store/pglite-database.js';
export { DEFAULT_SCHEMA, DEFAULT_TABLE } from '../store/schema.js';
export { migrationSql, type MigrationTarget } from '../store/migration.js';
export type { SqlDatabase, SqlQueryable, SqlTransaction, SqlResult } from '../store/sql-database.js';
export type { TransactionalDb } from '../store/transactional-db.js';
