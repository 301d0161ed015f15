// Message ids are u64 decimal strings: compared as numbers without
// BigInt (a longer one is larger; equal lengths compare as text).

import type { MessageId } from "./protocol";

export function cmpMessageId(a: MessageId, b: MessageId): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
