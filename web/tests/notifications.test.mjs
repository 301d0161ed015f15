// The web app's notification settings in a real browser (Debian's chromium,
// driven by playwright-core) against a real node: the settings page writes
// what the server then holds, a conversation's bell sets its level and
// mutes it (kept across a reload), the service worker shows a push as a
// browser notification (delivered through the DevTools protocol, as a push
// service would), and a verification link's page reports a bad token.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launchBrowser, startCluster, PASSWORD, unique, register, watchErrors } from "./cluster.mjs";

let cluster;
let browser;

before(async () => {
  cluster = await startCluster(1);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
});

async function signUp(context, prefix) {
  const page = await context.newPage();
  watchErrors(page);
  await page.goto(cluster.urls[0]);
  await register(page, prefix);
  return page;
}

/** A JSON request as the page's signed-in user. */
function api(page, method, path, body) {
  return page.evaluate(
    async ([method, path, body]) => {
      const token = JSON.parse(localStorage.getItem("chat.session")).access;
      const res = await fetch(path, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return res.json();
    },
    [method, path, body],
  );
}

test("settings, the bell and the service worker's notifications", async () => {
  const context = await browser.newContext({ permissions: ["notifications"] });
  const bob = await signUp(context, "bob");
  const ann = await signUp(await browser.newContext(), "ann");

  // The settings page writes what the server holds.
  await ann.click("[data-testid=settings-link]");
  await ann.waitForSelector("[data-testid=settings]");
  await ann.check("[data-testid=dnd-enabled]");
  await ann.waitForSelector("[data-testid=dnd-start]");
  await eventually("quiet hours stored", async () => (await api(ann, "GET", "/v1/me/notifications")).dnd?.start === "22:00");
  await ann.selectOption("[data-testid=email-delay]", "3600");
  await eventually("the delay stored", async () => (await api(ann, "GET", "/v1/me/notifications")).email.delay_secs === 3600);
  await ann.uncheck("[data-testid=push-enabled]");
  await eventually("push off", async () => (await api(ann, "GET", "/v1/me/notifications")).push.enabled === false);
  await ann.fill("[data-testid=email]", `${ann.user}@example.com`);
  await ann.click("button:has-text('Save address')");
  await ann.waitForSelector("[data-testid=email-state]:has-text('not confirmed yet')");

  // The bell: a level, then a mute; both kept across a reload.
  await ann.goto(cluster.urls[0] + "/#/");
  await ann.fill("[data-testid=new-members]", bob.user);
  await ann.click("[data-testid=start]");
  await ann.waitForFunction(() => location.hash.startsWith("#/c/"));
  const conv = decodeURIComponent(await ann.evaluate(() => location.hash.slice(4)));
  await ann.waitForSelector("[data-testid=bell][data-state=all]");
  await ann.selectOption("[data-testid=bell]", "mentions");
  await ann.waitForSelector("[data-testid=bell][data-state=mentions]");
  await ann.reload();
  await ann.waitForSelector("[data-testid=bell][data-state=mentions]");
  await ann.selectOption("[data-testid=bell]", "mute8");
  await ann.waitForSelector("[data-testid=bell][data-state=muted]");
  await ann.reload();
  await ann.waitForSelector("[data-testid=bell][data-state=muted]");

  // Bob's service worker shows a push of Ann's message as a notification
  // tagged with its conversation. The DevTools call answers before the
  // push is routed and drops it silently when Chromium's storage does not
  // hold the registration yet (right after activation, on a busy machine),
  // so it is repeated until shown: the tag makes a second copy replace the
  // first, as a push service's retry would.
  const cdp = await context.newCDPSession(bob);
  const ids = [];
  cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => {
    for (const r of e.registrations) if (!r.isDeleted) ids.push(r.registrationId);
  });
  await cdp.send("ServiceWorker.enable");
  await eventually("the service worker registered", async () => ids.length > 0);
  await bob.evaluate(() => navigator.serviceWorker.ready);
  const payload = {
    type: "message",
    conversation: conv,
    message: { id: "1", sender: ann.user, body: "are you there?" },
    unread: 1,
  };
  let delivered = 0;
  const shown = await eventually("the notification shown", async () => {
    if (Date.now() - delivered > 2_000) {
      delivered = Date.now();
      await cdp.send("ServiceWorker.deliverPushMessage", {
        origin: cluster.urls[0],
        registrationId: ids[ids.length - 1],
        data: JSON.stringify(payload),
      });
    }
    const list = await bob.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      return (await reg.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
    });
    return list.length > 0 ? list : null;
  });
  assert.equal(shown.length, 1, "one notification per conversation");
  assert.deepEqual(shown[0], { title: ann.user, body: "are you there?", tag: `conversation:${conv}` });

  // A verification link with a bad token says so.
  const verify = await context.newPage();
  await verify.goto(cluster.urls[0] + "/verify-email?token=deadbeef");
  await verify.waitForSelector("[data-testid=verify][data-state=failed]");
  assert.match(await verify.textContent("[data-testid=verify] [role=status]"), /used, expired or unknown/);

  assert.deepEqual(ann.errors, [], "console errors on ann's page");
  assert.deepEqual(bob.errors, [], "console errors on bob's page");
});
