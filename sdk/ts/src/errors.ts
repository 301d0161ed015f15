// Errors a request can end with: the node's own `error` frames (with their
// protocol code), and the client's: no connection, no answer in time.

import type { ErrorCode } from "./protocol";

/** What ended a request: a protocol error code, or the client's own
 * `timeout` (no answer in time; the request may still have been done). */
export type FailureCode = ErrorCode | "timeout";

export class RequestError extends Error {
  constructor(
    public readonly code: FailureCode,
    message: string,
    /** With `rate_limited`: when to try again. */
    public readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "RequestError";
  }

  /** Whether the same request may succeed later: nothing was done (a
   * dependency or the connection was down, the rate passed) or nobody knows
   * (no answer). A send retried keeps its `client_msg_id`, so it is stored
   * once whatever happened the first time. */
  get retriable(): boolean {
    return this.code === "unavailable" || this.code === "timeout" || this.code === "rate_limited" || this.code === "internal";
  }
}
