// The service worker: shows each push (the payload docs/protocol.md
// describes) as a browser notification, one per conversation (a newer one
// replaces the older), and opens that conversation when it is clicked.
/* eslint-env serviceworker */

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    return;
  }
  if (data.type !== "message" || !data.message) return;
  const title = `${data.message.sender}`;
  event.waitUntil(
    self.registration.showNotification(title, {
      body: data.message.body,
      tag: `conversation:${data.conversation}`,
      renotify: true,
      data: { conversation: data.conversation },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const conversation = event.notification.data?.conversation;
  const target = conversation ? `/#/c/${encodeURIComponent(conversation)}` : "/";
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const w of windows) {
        if (new URL(w.url).origin === self.location.origin) {
          await w.focus();
          return w.navigate(new URL(target, self.location.origin).href);
        }
      }
      return self.clients.openWindow(target);
    })(),
  );
});
