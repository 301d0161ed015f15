// The events a client hands the app: every server frame that is not the
// answer to a request, by its `type`, plus the client's own.

import type { ConversationId, Message, ServerFrame } from "./protocol";

/** A frame the node sends on its own (`error` only when it answers no request). */
export type EventFrame = Exclude<ServerFrame, { type: "ok" }>;

/** `idle` before `connect()`, `closed` after `close()` or an end. */
export type ConnState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Why the client stopped for good: the token was refused (revoked, logged
 * out elsewhere, no refresh), or an operator suspended the account. */
export type Ended = "unauthorized" | "suspended";

/** What a catch-up found: every message of `conversation` whose state
 * changed after the revision the client had, in their current state,
 * ascending by `rev`. Apply each by `id`, keeping the higher `rev`. */
export interface Changes {
  conversation: ConversationId;
  /** What asked for it: a reconnect (and its later second pass), a revision
   * gap in live events, or a `catch_up` frame. An app that counts unread
   * messages counts new ones from a gap or a `catch_up` (nothing else
   * will), not after a reconnect (the conversation list it reloads has). */
  reason: CatchUpReason;
  messages: Message[];
  /** The conversation's revision now: everything up to it has been seen. */
  rev: number;
}

export type CatchUpReason = "reconnect" | "gap" | "catch_up";

export type ChatEvents = { [F in EventFrame as F["type"]]: F } & {
  state: ConnState;
  ended: Ended;
  changes: Changes;
};

export type Listener<T> = (event: T) => void;

/** A small typed emitter: a listener that throws does not stop the others. */
export class Emitter<E> {
  private listeners = new Map<keyof E, Set<Listener<never>>>();

  on<K extends keyof E>(type: K, listener: Listener<E[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  emit<K extends keyof E>(type: K, event: E[K]): void {
    for (const l of this.listeners.get(type) ?? []) {
      try {
        (l as Listener<E[K]>)(event);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
