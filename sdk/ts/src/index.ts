// The chat cluster's client library: see README.md.

export { ChatClient } from "./client";
export type { ClientOptions, Request, WebSocketConstructor, WebSocketLike } from "./client";
export { RequestError } from "./errors";
export type { FailureCode } from "./errors";
export type { CatchUpReason, ChatEvents, Changes, ConnState, Ended, EventFrame } from "./events";
export { newClientMsgId } from "./outbox";
export type { Outgoing, SendOptions } from "./outbox";
export { backoffDelay } from "./backoff";
export type { BackoffOptions } from "./backoff";
export { codec } from "./codec";
export type { Codec, CodecName } from "./codec";
export { expiresAt, sessionTokens } from "./auth";
export type { Session, SessionTokenOptions } from "./auth";
export { cmpMessageId } from "./ids";
export type * from "./protocol";
