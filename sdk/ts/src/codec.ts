// The two encodings the node speaks, chosen by WebSocket subprotocol:
// `chat.v1.json` (text frames) and `chat.v1.msgpack` (binary frames, the
// same field names). Message ids are u64: decimal strings in JSON, integers
// in MessagePack; the SDK gives them to the app as strings either way.

import { Decoder, Encoder } from "@msgpack/msgpack";

export type CodecName = "json" | "msgpack";

export interface Codec {
  readonly subprotocol: string;
  encode(frame: unknown): string | Uint8Array;
  decode(data: unknown): unknown;
}

/** Keys whose integer value is a message id. */
const MESSAGE_ID_KEYS = new Set(["id", "reply_to", "up_to", "message", "before", "after"]);

/** MessagePack's 64-bit integers come as bigints: message ids become
 * strings, as in JSON; any other (times, counts) a number. */
function normalize(value: unknown, key: string | null): unknown {
  if (typeof value === "bigint") return key !== null && MESSAGE_ID_KEYS.has(key) ? value.toString() : Number(value);
  if (Array.isArray(value)) return value.map((v) => normalize(v, key));
  if (value instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of value) out[String(k)] = normalize(v, String(k));
    return out;
  }
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalize(v, k);
    return out;
  }
  return value;
}

const json: Codec = {
  subprotocol: "chat.v1.json",
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data as Uint8Array)),
};

function msgpack(): Codec {
  const encoder = new Encoder({ ignoreUndefined: true });
  const decoder = new Decoder({ useBigInt64: true });
  return {
    subprotocol: "chat.v1.msgpack",
    encode: (frame) => encoder.encode(frame),
    decode: (data) => {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
      return normalize(decoder.decode(bytes), null);
    },
  };
}

export function codec(name: CodecName): Codec {
  return name === "msgpack" ? msgpack() : json;
}
