/**
 * Error classes: one hierarchy under IdempotencyError. Match them with `instanceof`, never by message text.
 * Every error carries a stable `code`. None carries an HTTP status: the middleware answers with a problem
 * (see `PROBLEMS` in protocol.ts), and an error thrown to the application is the application's to map.
 * Three subclasses live beside what raises them, since they carry its details: CompletionRolledBackError
 * (store/completion-rolled-back.ts), TransactionControlError (store/transaction-control.ts) and
 * IdempotentFetchError (client/idempotent-fetch.ts).
 */

export class IdempotencyError extends Error {
  override name = 'IdempotencyError';
  readonly code: string = 'IDEMPOTENCY_ERROR';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * A completion, lease renewal or step was refused because another worker took the record over
 * after this worker's lease ran out. The late worker's write changed nothing.
 */
export class FencedError extends IdempotencyError {
  override name = 'FencedError';
  override readonly code = 'FENCED';

  constructor(
    readonly fence: string,
    options?: { cause?: unknown },
  ) {
    super(
      `The idempotency record is no longer owned by fence ${fence}: its lease ran out and another worker took it over. ` +
        'Raise leaseMs above your slowest handler, or keep the process responsive so the lease is renewed.',
      options,
    );
  }
}

/** A bad configuration value, raised at construction rather than at the first request. */
export class IdempotencyConfigError extends IdempotencyError {
  override name = 'IdempotencyConfigError';
  override readonly code = 'INVALID_OPTION';
}

/**
 * A request body that cannot be canonicalised for its fingerprint (NaN, lone surrogates, cycles, nesting
 * deeper than the stack): the middleware answers it `400 body-invalid`.
 */
export class UnfingerprintableBodyError extends IdempotencyError {
  override name = 'UnfingerprintableBodyError';
  override readonly code = 'UNFINGERPRINTABLE_BODY';
}
