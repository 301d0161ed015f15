// Sends that survive a lost connection: each gets its `client_msg_id` when
// the app calls `send`, and is sent again with it after a failure that may
// not have stored it (no connection, no answer, the owner moving), so the
// node stores it once. One at a time, in the order they were written.

import type { ChatClient } from "./client";
import { backoffDelay } from "./backoff";
import { RequestError } from "./errors";
import type { ConversationId, Message, MessageId } from "./protocol";

export interface SendOptions {
  /** `text` by default. */
  kind?: string;
  /** The message this one answers. */
  replyTo?: MessageId;
  /** Media ids of the sender's own uploads. */
  attachments?: string[];
  /** The idempotency key, when the app keeps its own (a new one otherwise). */
  clientMsgId?: string;
}

/** A send not acknowledged yet. */
export interface Outgoing {
  readonly client_msg_id: string;
  readonly conversation: ConversationId;
  readonly body: string;
  readonly kind: string;
  readonly reply_to?: MessageId;
  readonly attachments: string[];
  /** Tries so far. */
  attempts: number;
}

interface Entry extends Outgoing {
  /** Retriable failures in a row while connected. */
  failures: number;
  resolve: (m: Message) => void;
  reject: (e: RequestError) => void;
}

/** Retriable failures in a row, while connected, before a send is given
 * up (a lost connection does not count: it waits for the next one). */
const MAX_FAILURES = 8;

/** A fresh idempotency key: 24 hex digits after a prefix. */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "s" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  private entries: Entry[] = [];
  private flushing = false;

  constructor(private client: ChatClient) {}

  /** What is waiting to be acknowledged, oldest first. */
  pending(): readonly Outgoing[] {
    return this.entries;
  }

  send(conversation: ConversationId, body: string, options: SendOptions = {}): Promise<Message> {
    return new Promise((resolve, reject) => {
      this.entries.push({
        client_msg_id: options.clientMsgId ?? newClientMsgId(),
        conversation,
        body,
        kind: options.kind ?? "text",
        reply_to: options.replyTo,
        attachments: options.attachments ?? [],
        attempts: 0,
        failures: 0,
        resolve,
        reject,
      });
      void this.flush();
    });
  }

  /** Drops every waiting send: each fails with `unavailable`. */
  clear(): void {
    const dropped = this.entries.splice(0);
    for (const e of dropped) e.reject(new RequestError("unavailable", "the client was closed"));
  }

  /** Sends what waits, while connected. */
  async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.entries.length > 0 && this.client.isOpen) {
        const e = this.entries[0];
        e.attempts += 1;
        try {
          const ok = await this.client.request({
            type: "send",
            conversation: e.conversation,
            client_msg_id: e.client_msg_id,
            body: e.body,
            kind: e.kind,
            ...(e.reply_to !== undefined ? { reply_to: e.reply_to } : {}),
            ...(e.attachments.length ? { attachments: e.attachments } : {}),
          });
          this.entries.shift();
          // Our own message's revision counts like an event's: noting it
          // without the check would step over an event lost just before.
          if (ok.message) this.client.sync.observe({ type: "message", message: ok.message });
          if (ok.message) e.resolve(ok.message);
          else e.reject(new RequestError("internal", "the send's answer carried no message"));
        } catch (err) {
          const re = err instanceof RequestError ? err : new RequestError("internal", String(err));
          if (!re.retriable) {
            this.entries.shift();
            e.reject(re);
            continue;
          }
          // Lost with the connection: sent again once it is back.
          if (!this.client.isOpen) return;
          e.failures += 1;
          if (e.failures >= MAX_FAILURES) {
            this.entries.shift();
            e.reject(re);
            continue;
          }
          await new Promise((r) => setTimeout(r, re.retryAfterMs ?? backoffDelay(e.failures - 1)));
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
