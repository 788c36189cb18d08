/**
 * Error classes. Match them with `instanceof`, never by message text.
 * Every error carries a stable `code`; the ones that map to an HTTP answer carry its `status`.
 */

export class IdempotencyError extends Error {
  override name = 'IdempotencyError';
  readonly code: string = 'IDEMPOTENCY_ERROR';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The store could not be reached or answered with an error; the handler was not run. */
export class StoreUnavailableError extends IdempotencyError {
  override name = 'StoreUnavailableError';
  override readonly code = 'STORE_UNAVAILABLE';
}

/**
 * A completion, lease renewal or step was refused because another worker took the record over
 * after this worker's lease ran out. The late worker's write changed nothing.
 */
export class FencedError extends IdempotencyError {
  override name = 'FencedError';
  override readonly code = 'FENCED';

  constructor(readonly fence: string, options?: { cause?: unknown }) {
    super(
      `The idempotency record is no longer owned by fence ${fence}: its lease ran out and another worker took it over. ` +
        'Raise leaseMs above your slowest handler, or keep the process responsive so the lease is renewed.',
      options,
    );
  }
}

/** A bad configuration value, raised at construction rather than at the first request. */
export class IdempotencyConfigError extends TypeError {
  override name = 'IdempotencyConfigError';
  readonly code = 'INVALID_OPTION';
}
