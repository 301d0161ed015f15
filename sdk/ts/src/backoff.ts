// Reconnect delays: doubling from `initialMs` up to `maxMs`, each drawn
// from its upper half at random, so that the clients of a node that went
// away do not all come back in the same millisecond.

export interface BackoffOptions {
  /** The first delay's ceiling (250 ms). */
  initialMs?: number;
  /** The largest delay (5 s). */
  maxMs?: number;
}

/** The delay after `attempt` failures in a row (0 for the first). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 5000;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}
