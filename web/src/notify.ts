// Notifications from the app's side: the user's settings, a conversation's
// level, and this browser's Web Push subscription (through the service
// worker, public/sw.js, which shows the pushes).
import { Chat, Conversation } from "./chat";

export interface Settings {
  email: { enabled: boolean; delay_secs: number };
  push: { enabled: boolean };
  dnd?: { start: string; end: string; tz: string } | null;
}

export interface Me {
  id: string;
  display_name: string;
  email?: string;
  email_verified: boolean;
}

export type Level = "all" | "mentions" | "none";

export const getSettings = (chat: Chat): Promise<Settings> => chat.request("GET", "/v1/me/notifications");

export const putSettings = (chat: Chat, patch: Partial<Settings>): Promise<Settings> =>
  chat.request("PUT", "/v1/me/notifications", patch);

export const getMe = (chat: Chat): Promise<Me> => chat.request("GET", "/v1/me");

export const putEmail = (chat: Chat, email: string): Promise<unknown> =>
  chat.request("PUT", "/v1/me/email", { email });

/** Sets `c`'s level for this user; `muteFor` (ms) mutes it that long. */
export async function setLevel(chat: Chat, c: Conversation, level: Level, muteFor?: number): Promise<void> {
  const body = { level, muted_until: muteFor ? Date.now() + muteFor : undefined };
  const notify = await chat.request("PUT", `/v1/conversations/${encodeURIComponent(c.id)}/notifications`, body);
  chat.setNotify(c.id, notify);
}

/** The bell's state of `c`: muted, or its level. */
export function bellOf(c: Conversation): string {
  const n = c.notify;
  if (!n) return c.kind === "channel" ? "mentions" : "all";
  if (n.muted_until && n.muted_until > Date.now()) return "muted";
  return n.level;
}

/** Whether this browser can take pushes at all. */
export function pushSupported(): boolean {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/** Registers the service worker (every load: it shows pushes and opens
 * their conversation on click). */
export async function registerWorker(): Promise<ServiceWorkerRegistration | null> {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register("/sw.js");
  } catch {
    return null;
  }
}

function urlBase64ToBytes(base64: string): ArrayBuffer {
  const padded = (base64 + "=".repeat((4 - (base64.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (ch) => ch.charCodeAt(0)).buffer;
}

/** Asks the user, subscribes this browser with the cluster's key and gives
 * the subscription to the server. */
export async function enablePush(chat: Chat): Promise<void> {
  if (!pushSupported()) throw new Error("this browser cannot take push notifications");
  if ((await Notification.requestPermission()) !== "granted") {
    throw new Error("notifications are blocked for this site in the browser");
  }
  const registration = (await registerWorker()) ?? (await navigator.serviceWorker.ready);
  const { public_key } = await chat.request("GET", "/v1/push/vapid-public-key");
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: urlBase64ToBytes(public_key),
  });
  const json = subscription.toJSON();
  await chat.request("POST", "/v1/me/push-subscriptions", { endpoint: json.endpoint, keys: json.keys });
}
