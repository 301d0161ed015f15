// People and accounts in a real browser (Debian's chromium, driven by
// playwright-core) against a real node: the profile page, the user search
// when starting a conversation, reporting and blocking from a message's
// menu (and unblocking), roles changed from the members panel, the
// security page (password, the second factor from its QR code's secret
// with codes from an independent generator, npm's otpauth, and the
// devices signed in), sign-in with a code, a password reset page, and the
// admin console's reports queue.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as OTPAuth from "otpauth";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { eventually, launchBrowser, root, startCluster, PASSWORD, unique, register, watchErrors } from "./cluster.mjs";

const artifacts = join(root, "web", "test-artifacts");

const ADMIN = `boss${Date.now().toString(36)}`;
let cluster;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  cluster = await startCluster(1, { CHAT__ADMIN__USERS: `["${ADMIN}"]` }, { admins: { [ADMIN]: PASSWORD } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
});

async function page() {
  const p = await (await browser.newContext()).newPage();
  watchErrors(p);
  return p;
}

async function signUp(prefix) {
  const p = await page();
  await p.goto(cluster.urls[0]);
  await register(p, prefix);
  return p;
}

/** A JSON request as the page's signed-in user. */
function api(p, method, path, body) {
  return p.evaluate(
    async ([method, path, body]) => {
      const token = JSON.parse(localStorage.getItem("chat.session")).access;
      const res = await fetch(path, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    [method, path, body],
  );
}

/** Starts a group of `p`'s user with `others`: its id. */
async function startGroup(p, others) {
  await p.goto(cluster.urls[0] + "/#/");
  await p.selectOption("select[aria-label=Kind]", "group");
  await p.fill("[data-testid=new-members]", others.join(", "));
  await p.click("[data-testid=start]");
  await p.waitForFunction(() => location.hash.startsWith("#/c/"));
  return decodeURIComponent(await p.evaluate(() => location.hash.slice(4)));
}

test("the profile page, and finding people to start a conversation with", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  await bob.click("[data-testid=profile-link]");
  await bob.waitForSelector("[data-testid=profile]");
  const shown = `Bobby${unique("b")}`;
  await bob.fill("[data-testid=display-name]", shown);
  await bob.fill("[data-testid=status-text]", "out for lunch");
  await bob.click("[data-testid=save-profile]");
  await bob.waitForSelector(`[data-testid=shown-name]:has-text("${shown}")`);
  await bob.waitForSelector('[data-testid=shown-status]:has-text("out for lunch")');
  await bob.screenshot({ path: join(artifacts, "profile.png") });
  const me = await api(bob, "GET", "/v1/me");
  assert.equal(me.body.display_name, shown);
  assert.equal(me.body.status_text, "out for lunch");

  // Ann types the start of Bob's display name and picks him.
  await ann.fill("[data-testid=new-members]", shown.slice(0, 12).toLowerCase());
  await ann.waitForSelector(`[data-testid=suggestion][data-user="${bob.user}"]`);
  await ann.screenshot({ path: join(artifacts, "user-search.png") });
  await ann.click(`[data-testid=suggestion][data-user="${bob.user}"]`);
  assert.equal(await ann.inputValue("[data-testid=new-members]"), bob.user);
  await ann.click("[data-testid=start]");
  await ann.waitForFunction(() => location.hash.startsWith("#/c/"));
  await ann.waitForSelector("[data-testid=avatar]");
  assert.deepEqual(ann.errors, []);
  assert.deepEqual(bob.errors, []);
});

test("report and block from a message's menu, unblock from the profile page, roles from the members panel", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  ann.on("dialog", (d) => void (d.type() === "prompt" ? d.accept("spam, again") : d.accept()));
  const conv = await startGroup(ann, [bob.user]);
  const sent = await api(bob, "POST", `/v1/conversations/${encodeURIComponent(conv)}/messages`, {
    client_msg_id: unique("m"),
    body: "buy my stuff",
  });
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  const row = ann.locator("[data-testid=message]", { hasText: "buy my stuff" });
  await row.waitFor();
  // The actions show on hover, as a pointer reaches the message.
  await row.hover();
  await row.locator("[data-testid=report]").click();
  await row.locator('[data-testid=menu-state]:has-text("reported")').waitFor();
  await row.hover();
  await row.locator("[data-testid=block]").click();
  await row.locator('[data-testid=menu-state]:has-text("blocked")').waitFor();
  const blocks = await api(ann, "GET", "/v1/me/blocks");
  assert.deepEqual(blocks.body.blocks, [bob.user]);

  // Roles: Ann (the owner) makes Bob an admin from the members panel.
  await ann.selectOption(`[data-testid=role-select][data-user="${bob.user}"]`, "admin");
  await eventually("bob shown an admin", async () =>
    (await ann.locator(`[data-testid=role-select][data-user="${bob.user}"]`).inputValue()) === "admin",
  );
  // Bob, an admin now, may set the title.
  const titled = await api(bob, "PATCH", `/v1/conversations/${encodeURIComponent(conv)}`, { title: "Stuff" });
  assert.equal(titled.status, 200, JSON.stringify(titled.body));

  await ann.click("[data-testid=profile-link]");
  await ann.locator(`[data-testid=blocked] li[data-user="${bob.user}"] [data-testid=unblock]`).click();
  await eventually("unblocked", async () => (await api(ann, "GET", "/v1/me/blocks")).body.blocks.length === 0);
  assert.deepEqual(ann.errors, []);
});

test("the security page: password, two-step sign-in from its QR code's secret, devices", async () => {
  const ann = await signUp("ann");
  const other = await page();
  await other.goto(cluster.urls[0]);
  await other.fill("[data-testid=username]", ann.user);
  await other.fill("[data-testid=password]", PASSWORD);
  await other.click("[data-testid=login]");
  await other.waitForSelector("[data-testid=connection][data-state=open]");

  await ann.click("[data-testid=security-link]");
  await ann.waitForSelector("[data-testid=security]");
  await eventually("two devices listed", async () => (await ann.locator("[data-testid=session]").count()) === 2);
  await ann.locator('[data-testid=session][data-current=no] [data-testid=end-session]').click();
  await eventually("one device left", async () => (await ann.locator("[data-testid=session]").count()) === 1);

  // Two-step sign-in: the QR code is drawn, the key beside it.
  await ann.click("[data-testid=totp-start]");
  await ann.waitForSelector("[data-testid=totp-qr]");
  await ann.screenshot({ path: join(artifacts, "two-step-qr.png"), fullPage: true });
  const src = await ann.getAttribute("[data-testid=totp-qr]", "src");
  assert.match(src, /^data:image\/gif;base64,/);
  const secret = await ann.textContent("[data-testid=totp-secret]");
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30 });
  // Early in a 30 s step: the codes made now are judged in the same step.
  await eventually("early in a step", async () => (Date.now() / 1000) % 30 < 20, 40_000);
  // Confirmed with the code of the step before (so that now's is unused).
  await ann.fill("[data-testid=totp-code]", totp.generate({ timestamp: Date.now() - 30_000 }));
  await ann.click("[data-testid=totp-confirm]");
  await ann.waitForSelector("[data-testid=recovery-codes] li");
  assert.equal(await ann.locator("[data-testid=recovery-codes] li").count(), 10);
  await ann.screenshot({ path: join(artifacts, "security.png"), fullPage: true });
  await ann.waitForSelector("[data-testid=two-factor][data-state=on]");

  // Password change.
  await ann.fill("[data-testid=current-password]", PASSWORD);
  await ann.fill("[data-testid=new-password]", "a new password");
  await ann.click("[data-testid=change-password]");
  await ann.waitForSelector('[role=status]:has-text("Password changed")');

  // A new sign-in asks for a code.
  const later = await page();
  await later.goto(cluster.urls[0]);
  await later.fill("[data-testid=username]", ann.user);
  await later.fill("[data-testid=password]", "a new password");
  await later.click("[data-testid=login]");
  await later.waitForSelector("[data-testid=totp]");
  await later.screenshot({ path: join(artifacts, "sign-in-code.png") });
  await later.fill("[data-testid=totp]", "000000");
  await later.click("[data-testid=login]");
  await later.waitForSelector('[role=alert]:has-text("wrong, used or expired code")');
  await later.fill("[data-testid=totp]", totp.generate());
  await later.click("[data-testid=login]");
  await later.waitForSelector("[data-testid=connection][data-state=open]");
  assert.deepEqual(ann.errors, []);
  assert.deepEqual(later.errors.filter((e) => !/401/.test(e)), []);
});

test("a reset link's page says when the link is bad; forgot-password says the same for any address", async () => {
  const p = await page();
  await p.goto(cluster.urls[0]);
  await p.click("[data-testid=forgot]");
  await p.fill("[data-testid=reset-email]", `${unique("nobody")}@example.com`);
  await p.click("text=Send the link");
  await p.waitForSelector("[data-testid=reset-sent]");
  const reset = await page();
  await reset.goto(cluster.urls[0] + "/reset-password?token=deadbeef");
  await reset.fill("[data-testid=new-password]", "whatever password");
  await reset.click("[data-testid=set-password]");
  await reset.waitForSelector("[data-testid=reset][data-state=failed]");
  assert.match(await reset.textContent("[role=alert]"), /used, expired or unknown/);
});

test("the admin console's reports queue", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  const conv = await startGroup(ann, [bob.user]);
  const sent = await api(bob, "POST", `/v1/conversations/${encodeURIComponent(conv)}/messages`, {
    client_msg_id: unique("m"),
    body: "a vile thing",
  });
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  const filed = await api(ann, "POST", "/v1/reports", {
    conversation: conv,
    message: String(sent.body.message.id),
    reason: "vile",
  });
  assert.equal(filed.status, 201, JSON.stringify(filed.body));

  const admin = await page();
  await admin.goto(`${cluster.urls[0]}/admin`);
  await admin.fill("[data-testid=username]", ADMIN);
  await admin.fill("[data-testid=password]", PASSWORD);
  await admin.click("[data-testid=login]");
  const row = admin.locator(`[data-testid=report][data-id="${filed.body.id}"]`);
  await row.waitFor();
  await row.locator("[data-testid=delete-message]").click();
  await row.waitFor({ state: "detached" });
  // Ann's page shows the message deleted.
  await ann.locator("[data-testid=message] .deleted").waitFor();
});
