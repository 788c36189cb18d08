import os from 'node:os';
import type pg from 'pg';

export interface Environment {
  cpus: number;
  cpuModel: string;
  memoryGb: number;
  node: string;
  postgres: string;
  /** 1-minute load average when the run started and ended: other work on the machine shows here. */
  loadAverageAtStart: number;
  loadAverageAtEnd?: number;
  startedAt: string;
}

export async function describeEnvironment(pool: pg.Pool): Promise<Environment> {
  const { rows } = await pool.query<{ server_version: string }>('SHOW server_version');
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGb: Math.round(os.totalmem() / 1024 ** 3),
    node: process.version,
    postgres: rows[0]!.server_version,
    loadAverageAtStart: os.loadavg()[0]!,
    startedAt: new Date().toISOString(),
  };
}
