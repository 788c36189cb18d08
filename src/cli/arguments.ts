import { parseArgs } from 'node:util';
import { IdempotencyConfigError } from '../errors.js';
import { resolveDistribution, type DistributionOptions } from '../store/distribution.js';
import { assertIdentifier } from '../store/identifiers.js';
import { DEFAULT_PARTITION_INTERVAL_SECONDS, DEFAULT_PREMADE_PARTITIONS } from '../store/partition-maintenance.js';
import { DEFAULT_SCHEMA, DEFAULT_TABLE, type TableName } from '../store/schema.js';
import { usageError } from './errors.js';

export const DEFAULT_JAEGER_URL = 'http://localhost:16686';

/** Every flag any command takes; each command lists the ones it accepts in COMMANDS. */
const OPTIONS = {
  schema: { type: 'string' },
  table: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  'print-sql': { type: 'boolean' },
  'batch-size': { type: 'string' },
  'max-batches': { type: 'string' },
  scope: { type: 'string' },
  key: { type: 'string' },
  'jaeger-url': { type: 'string' },
  instance: { type: 'string' },
  force: { type: 'boolean' },
  partitioned: { type: 'boolean' },
  'partition-interval-seconds': { type: 'string' },
  'premade-partitions': { type: 'string' },
  distribute: { type: 'boolean' },
  'distribution-column': { type: 'string' },
  'colocate-with': { type: 'string' },
} as const;

type Flag = keyof typeof OPTIONS;
const COMMON_FLAGS: readonly Flag[] = ['schema', 'table', 'json', 'help'];

export const COMMANDS = {
  migrate: {
    summary:
      'Create the schema, sequence, table and index if missing (safe to run on every deploy). With --partitioned, a table\n' +
      'partitioned by creation time, with its catch-all partition, its claim function and the partitions ahead.\n' +
      'With --distribute, then distribute it with Citus (docs/scale-out.md).',
    usage:
      'migrate [--print-sql] [--partitioned [--partition-interval-seconds N] [--premade-partitions N]] ' +
      '[--distribute [--distribution-column scope|key] [--colocate-with TABLE]]',
    flags: ['print-sql', 'partitioned', 'partition-interval-seconds', 'premade-partitions', 'distribute', 'distribution-column', 'colocate-with'],
  },
  sweep: {
    summary:
      'Delete expired records in bounded batches (a live lease is never swept). On a partitioned table (detected by\n' +
      'itself), first create the partitions ahead and drop those whose records have all expired.',
    usage: 'sweep [--batch-size N] [--max-batches N] [--partition-interval-seconds N] [--premade-partitions N]',
    flags: ['batch-size', 'max-batches', 'partition-interval-seconds', 'premade-partitions'],
  },
  inspect: {
    summary:
      'Show one record: status, age, attempt, correlation ID, original trace ID and its Jaeger URL. With --instance, the\n' +
      'record a problem answer concerned, from the urn:uuid in its `instance` member (reads the whole table).',
    usage: 'inspect (--key K [--scope S] | --instance URN) [--jaeger-url URL]',
    flags: ['scope', 'key', 'instance', 'jaeger-url'],
  },
  forget: {
    summary:
      'Delete one completed record, so its key runs again on its next request (a support case: the customer must\n' +
      'resubmit). An in-progress record is refused (exit 5) unless its lease has lapsed and --force is given.',
    usage: 'forget --key K [--scope S] [--force]',
    flags: ['scope', 'key', 'force'],
  },
  stats: {
    summary: 'Records by status, the age of the oldest one, and in-progress records whose lease lapsed.',
    usage: 'stats',
    flags: [],
  },
} as const satisfies Record<string, { summary: string; usage: string; flags: readonly Flag[] }>;

export type CommandName = keyof typeof COMMANDS;

interface Common {
  table: TableName;
  json: boolean;
}

/** The partitioning flags as given; what is absent is taken from the table's partitions, else the defaults. */
export interface PartitionFlags {
  intervalSeconds: number | undefined;
  premadePartitions: number | undefined;
}

export type Invocation =
  | { command: 'help'; json: boolean; topic?: CommandName }
  /** `partitioning` is undefined without --partitioned. */
  | (Common & { command: 'migrate'; printSql: boolean; partitioning: PartitionFlags | undefined; distribute: DistributionOptions | undefined })
  | (Common & { command: 'sweep'; batchSize: number | undefined; maxBatches: number | undefined; partitions: PartitionFlags })
  | (Common & { command: 'inspect'; target: InspectTarget; jaegerUrl: string })
  | (Common & { command: 'forget'; scope: string; key: string; force: boolean })
  | (Common & { command: 'stats' });

/** What inspect looks up: one (scope, key), or the record a problem occurrence ID points to. */
export type InspectTarget = { scope: string; key: string } | { instance: string };

/** Parses argv (without `node` and the script). Throws a usage CliError on anything unexpected. */
export function parseInvocation(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw usageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const json = values.json ?? false;
  const [name, ...extra] = positionals;
  if (name === undefined || name === 'help') {
    if (values.help || name === 'help') return { command: 'help', json, topic: extra[0] === undefined ? undefined : commandName(extra[0]) };
    throw usageError('a command is required');
  }
  const command = commandName(name);
  if (values.help) return { command: 'help', json, topic: command };
  if (extra.length > 0) throw usageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  const accepted = new Set<Flag>([...COMMON_FLAGS, ...COMMANDS[command].flags]);
  for (const flag of Object.keys(values) as Flag[]) {
    if (!accepted.has(flag)) throw usageError(`${command} does not take --${flag}`);
  }

  const common: Common = { table: tableName(values.schema, values.table), json };
  switch (command) {
    case 'migrate': {
      const partitioning = partitionFlags(values);
      if (!values.partitioned) {
        const given = (['partition-interval-seconds', 'premade-partitions'] as const).find((flag) => values[flag] !== undefined);
        if (given) throw usageError(`--${given} needs --partitioned`);
      }
      const printSql = values['print-sql'] ?? false;
      return { ...common, command, printSql, partitioning: values.partitioned ? partitioning : undefined, distribute: distributeFlags(values, printSql) };
    }
    case 'sweep':
      return {
        ...common,
        command,
        batchSize: optionalPositiveInteger(values['batch-size'], 'batch-size'),
        maxBatches: optionalPositiveInteger(values['max-batches'], 'max-batches'),
        partitions: partitionFlags(values),
      };
    case 'inspect': {
      if ((values.key === undefined) === (values.instance === undefined)) throw usageError('inspect needs either --key or --instance');
      if (values.instance !== undefined && values.scope !== undefined) throw usageError('--instance finds the record by itself: drop --scope');
      // The middleware's default scope is '' (one global scope), so that is the default here too.
      const target = values.instance === undefined ? { scope: values.scope ?? '', key: values.key! } : { instance: values.instance };
      return { ...common, command, target, jaegerUrl: jaegerBase(values['jaeger-url'] ?? env.JAEGER_URL ?? DEFAULT_JAEGER_URL) };
    }
    case 'forget':
      if (values.key === undefined) throw usageError('forget needs --key');
      return { ...common, command, scope: values.scope ?? '', key: values.key, force: values.force ?? false };
    case 'stats':
      return { ...common, command };
  }
}

export function usageText(topic?: CommandName): string {
  if (topic) {
    const { summary, usage } = COMMANDS[topic];
    return `Usage: koa-idempotency ${usage} [--schema S] [--table T] [--json]\n\n${summary}\n\n${FLAGS_HELP}\n`;
  }
  const commands = Object.entries(COMMANDS)
    .map(([, { usage, summary }]) => `  ${usage}\n      ${summary.replaceAll('\n', '\n      ')}`)
    .join('\n');
  return `Usage: koa-idempotency <command> [flags]

Operates the records table of koa-idempotency on the Postgres server at DATABASE_URL.

Commands:
${commands}

${FLAGS_HELP}
Exit codes: 0 ok, 1 inspect or forget found no record, 2 usage error (also: migrate's --partitioned does not
match the existing table), 3 database unavailable or table missing, 4 any other failure, 5 forget refused a
record in progress.
`;
}

const FLAGS_HELP = `Flags:
  --schema S          schema of the records table (default: ${DEFAULT_SCHEMA})
  --table T           name of the records table (default: ${DEFAULT_TABLE})
  --json              print one JSON document on stdout (errors too: {"error": {"code", "message"}})
  --scope S           inspect, forget: the record's scope (default: '', the middleware's default scope)
  --key K             inspect, forget: the record's Idempotency-Key
  --instance URN      inspect: a problem's occurrence ID (urn:uuid:...), instead of --scope and --key
  --force             forget: also delete an in-progress record whose lease has lapsed (never a live one)
  --jaeger-url URL    inspect: Jaeger UI base for trace links (default: JAEGER_URL, else ${DEFAULT_JAEGER_URL})
  --batch-size N      sweep: rows deleted per statement (default: 1000)
  --max-batches N     sweep: stop after N batches (default: until no expired record is left)
  --print-sql         migrate: print the migration SQL instead of running it (needs no database); with
                      --partitioned, the partitioned script: its time partitions come from sweep (until
                      then records land in the catch-all partition <table>_default)
  --partitioned       migrate: create the table partitioned by created_at, so that sweep drops whole
                      partitions of expired records instead of deleting rows. A table is never converted:
                      migrate fails (exit 2) when --partitioned does not match the existing table. sweep,
                      inspect and stats find out from the database whether a table is partitioned.
  --partition-interval-seconds N
                      migrate, sweep (partitioned tables): time range of one partition, aligned on the
                      Unix epoch (default: the range of the table's newest partition, so it need not be
                      repeated; ${DEFAULT_PARTITION_INTERVAL_SECONDS} for a table that has none)
  --premade-partitions N
                      migrate, sweep (partitioned tables): partitions created ahead of the current one
                      (default: ${DEFAULT_PREMADE_PARTITIONS}; 0 is allowed)
  --distribute        migrate: then distribute the table with Citus (create_distributed_table, on the
                      coordinator; refused where the citus extension is absent; idempotent)
  --distribution-column scope|key
                      migrate --distribute: the distribution column (default: scope, co-located by tenant)
  --colocate-with TABLE
                      migrate --distribute: a distributed table ([schema.]table) to co-locate with
  -h, --help          show help

Environment: DATABASE_URL (postgres://user:password@host:5432/database), JAEGER_URL.
`;

function commandName(name: string): CommandName {
  if (Object.hasOwn(COMMANDS, name)) return name as CommandName;
  throw usageError(`unknown command ${JSON.stringify(name)} (expected one of: ${Object.keys(COMMANDS).join(', ')})`);
}

function tableName(schema: string | undefined, table: string | undefined): TableName {
  try {
    return { schema: assertIdentifier(schema ?? DEFAULT_SCHEMA, '--schema'), table: assertIdentifier(table ?? DEFAULT_TABLE, '--table') };
  } catch (error) {
    if (error instanceof IdempotencyConfigError) throw usageError(error.message);
    throw error;
  }
}

/** --distribute and its two flags, validated as migrate() validates them; undefined without --distribute. */
function distributeFlags(
  values: { distribute?: boolean | undefined; 'distribution-column'?: string | undefined; 'colocate-with'?: string | undefined },
  printSql: boolean,
): DistributionOptions | undefined {
  if (!values.distribute) {
    const given = (['distribution-column', 'colocate-with'] as const).find((flag) => values[flag] !== undefined);
    if (given) throw usageError(`--${given} needs --distribute`);
    return undefined;
  }
  if (printSql) throw usageError('--distribute runs create_distributed_table on the coordinator: it has no --print-sql script');
  const options = { column: values['distribution-column'] as DistributionOptions['column'], colocateWith: values['colocate-with'] };
  try {
    resolveDistribution(options);
  } catch (error) {
    if (error instanceof IdempotencyConfigError)
      throw usageError(error.message.replace('distribute.column', '--distribution-column').replace('distribute.colocateWith', '--colocate-with'));
    throw error;
  }
  return options;
}

function partitionFlags(values: { 'partition-interval-seconds'?: string | undefined; 'premade-partitions'?: string | undefined }): PartitionFlags {
  return {
    intervalSeconds: optionalPositiveInteger(values['partition-interval-seconds'], 'partition-interval-seconds'),
    premadePartitions: optionalWholeNumber(values['premade-partitions'], 'premade-partitions', 0),
  };
}

function optionalPositiveInteger(value: string | undefined, flag: string): number | undefined {
  return optionalWholeNumber(value, flag, 1);
}

function optionalWholeNumber(value: string | undefined, flag: string, min: 0 | 1): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number < min) {
    throw usageError(`--${flag} must be ${min === 1 ? 'a positive integer' : 'zero or a positive integer'}; got ${JSON.stringify(value)}`);
  }
  return number;
}

function jaegerBase(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError(`the Jaeger URL must be an http(s) URL; got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`the Jaeger URL must be an http(s) URL; got ${JSON.stringify(value)}`);
  return withoutTrailingSlashes(url.href);
}

/** Drops trailing slashes in linear time (a `/\/+$/` regex backtracks quadratically on a long run of slashes). */
function withoutTrailingSlashes(text: string): string {
  let end = text.length;
  while (end > 0 && text[end - 1] === '/') end--;
  return text.slice(0, end);
}
