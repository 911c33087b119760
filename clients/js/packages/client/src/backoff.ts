/**
 * Reconnect delays as a pure function, so their bounds are tested without a network or a clock.
 *
 * "Full jitter" (a uniformly random delay between zero and an exponentially growing cap) spreads
 * the reconnects of thousands of clients that lost the same server at the same moment, instead of
 * sending them back in synchronized waves.
 */

/** Tunables of the reconnect delay. */
export interface BackoffOptions {
  /** The cap of the first retry, in ms; each further attempt doubles it. */
  readonly baseDelay: number;
  /** The largest cap, in ms: no reconnect waits longer than this. */
  readonly maxDelay: number;
}

/** Defaults: the first retry within 500 ms, never more than 20 s between attempts. */
export const DEFAULT_BACKOFF: BackoffOptions = { baseDelay: 500, maxDelay: 20_000 };

/** The cap of attempt `attempt` (0-based): `min(maxDelay, baseDelay × 2^attempt)`. */
export function backoffCap(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const exp = Math.min(Math.max(attempt, 0), 30);
  return Math.min(options.maxDelay, options.baseDelay * 2 ** exp);
}

/**
 * The delay before reconnect attempt `attempt`: uniform in `[0, backoffCap(attempt)]`.
 * `random` returns a number in `[0, 1)` (Math.random in production, fixed values in tests).
 */
export function backoffDelay(
  attempt: number,
  random: () => number,
  options: BackoffOptions = DEFAULT_BACKOFF,
): number {
  return Math.floor(random() * backoffCap(attempt, options));
}
