// Catch-up (docs/protocol.md, "How to catch up"): the highest revision
// seen per conversation; a live event more than one above it is a gap; a
// reconnect or a `catch_up` frame asks `changes` from it. One catch-up at a
// time per conversation: one asked during another runs once more after it.

import type { ChatClient } from "./client";
import { backoffDelay } from "./backoff";
import { RequestError } from "./errors";
import type { CatchUpReason, EventFrame } from "./events";
import type { ConversationId } from "./protocol";

const PAGE = 200;

export class Sync {
  private revs = new Map<ConversationId, number>();
  /** Conversations with a catch-up running, and the next one asked while
   * it ran (null: none). */
  private running = new Map<ConversationId, { from: number; reason: CatchUpReason } | null>();

  constructor(private client: ChatClient) {}

  /** Follows `conversation` from revision `rev` (its `rev` in a history
   * page, the conversation list or a `changes` reply): what changes after it
   * is caught up after a gap or a reconnect. */
  track(conversation: ConversationId, rev: number): void {
    const had = this.revs.get(conversation);
    if (had === undefined || rev > had) this.revs.set(conversation, rev);
  }

  /** Stops following it (the user left). */
  untrack(conversation: ConversationId): void {
    this.revs.delete(conversation);
  }

  /** The highest revision seen of `conversation`. */
  rev(conversation: ConversationId): number | undefined {
    return this.revs.get(conversation);
  }

  /** Watches a live event for a revision gap. */
  observe(frame: EventFrame): void {
    let conversation: ConversationId;
    let rev: number;
    switch (frame.type) {
      case "message":
      case "message_updated":
        ({ conversation, rev } = frame.message);
        break;
      case "reaction":
        ({ conversation, rev } = frame);
        break;
      case "catch_up":
        for (const c of frame.conversations) if (this.revs.has(c)) void this.catchUp(c, "catch_up");
        return;
      default:
        return;
    }
    const last = this.revs.get(conversation);
    if (last === undefined) {
      // First sight of it: followed from here (the app loads what came before).
      this.revs.set(conversation, rev);
      return;
    }
    if (rev > last + 1) void this.catchUp(conversation, "gap", last);
    if (rev > last) this.revs.set(conversation, rev);
  }

  /** After a reconnect: every followed conversation, from where it was. */
  reconnected(): void {
    for (const c of this.revs.keys()) void this.catchUp(c, "reconnect");
  }

  /** Asks `changes` of `conversation` after `from` (its last revision by
   * default) until nothing more, then emits them. */
  async catchUp(conversation: ConversationId, reason: CatchUpReason, from = this.revs.get(conversation) ?? 0): Promise<void> {
    if (this.running.has(conversation)) {
      const next = this.running.get(conversation);
      // A gap or `catch_up` wins over a reconnect: its new messages count.
      this.running.set(conversation, {
        from: next ? Math.min(next.from, from) : from,
        reason: next && next.reason !== "reconnect" ? next.reason : reason,
      });
      return;
    }
    this.running.set(conversation, null);
    let cursor = from;
    let failures = 0;
    try {
      for (;;) {
        let reply;
        try {
          reply = await this.client.request({ type: "changes", conversation, after_rev: cursor, limit: PAGE });
        } catch (e) {
          if (!(e instanceof RequestError) || !e.retriable) {
            // Not a member any more (or gone): nothing to follow.
            if (e instanceof RequestError && (e.code === "forbidden" || e.code === "not_found")) this.untrack(conversation);
            return;
          }
          // Disconnected: the reconnect catches up again.
          if (!this.client.isOpen) return;
          await new Promise((r) => setTimeout(r, e.retryAfterMs ?? backoffDelay(failures++)));
          continue;
        }
        const messages = reply.messages ?? [];
        const rev = reply.rev ?? cursor;
        this.client.emitChanges({ conversation, reason, messages, rev: reply.more ? (messages.at(-1)?.rev ?? rev) : rev });
        if (reply.more && messages.length > 0) {
          cursor = messages[messages.length - 1].rev;
          continue;
        }
        if (this.revs.has(conversation)) this.track(conversation, rev);
        return;
      }
    } finally {
      const again = this.running.get(conversation);
      this.running.delete(conversation);
      if (again != null) void this.catchUp(conversation, again.reason, again.from);
    }
  }
}
