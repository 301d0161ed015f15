// Files and search in a real browser (Debian's chromium, driven by
// playwright-core) against a real node: attaching an image and a file by
// the button, a pasted image, a dropped file, upload progress, the image
// preview (loaded through its signed link) and the viewer, the file card;
// a message sent before its upload is done; refused uploads (too large,
// past the quota) and a removed one giving its room back; then searching
// for a message and opening it in its conversation with the history around
// it loaded.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { eventually, launchBrowser, recordFrames, root, startCluster, PASSWORD, unique, register, watchErrors } from "./cluster.mjs";
import { png } from "./images.mjs";

const artifacts = join(root, "web", "test-artifacts");
let cluster;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  // Small limits, to see the page's words for refused uploads.
  cluster = await startCluster(1, { CHAT__MEDIA__MAX_UPLOAD_BYTES: "2000000", CHAT__MEDIA__QUOTA_BYTES: "3000000" });
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
  recordFrames(p);
  await p.goto(cluster.urls[0]);
  await register(p, prefix);
  return p;
}

async function startGroup(p, others) {
  await p.goto(cluster.urls[0] + "/#/");
  await p.selectOption("select[aria-label=Kind]", "group");
  await p.fill("[data-testid=new-members]", others.join(", "));
  await p.click("[data-testid=start]");
  await p.waitForFunction(() => location.hash.startsWith("#/c/"));
  return decodeURIComponent(await p.evaluate(() => location.hash.slice(4)));
}

test("attach an image and a file, see them on the other side, open the viewer; paste and drop", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  const conv = await startGroup(ann, [bob.user]);
  const sendButton = ann.locator(".composer button[type=submit]");
  assert.ok(await sendButton.isDisabled(), "nothing to send yet");
  await ann.setInputFiles("[data-testid=attach-input]", [
    { name: "stripes.png", mimeType: "image/png", buffer: png(400, 300) },
    { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("x".repeat(2400)) },
  ]);
  await ann.waitForSelector("[data-testid=attachment-chip] [data-testid=upload-progress]");
  await eventually("both uploads done", async () => {
    const done = await ann.locator("[data-testid=attachment-chip][data-done=yes]").count();
    if (done !== 2) throw new Error(`${done} done`);
    return true;
  });
  const progress = await ann.locator("[data-testid=upload-progress]").evaluateAll((els) => els.map((e) => e.value));
  assert.deepEqual(progress, [1, 1], "the bars reach the end");
  assert.ok(await sendButton.isEnabled(), "files alone may be sent");
  await ann.fill("[data-testid=composer]", "the plan, attached");
  await ann.screenshot({ path: join(artifacts, "attach.png") });
  await ann.keyboard.press("Enter");
  assert.equal(await ann.locator("[data-testid=attachment-chip]").count(), 0, "sent: the chips go");
  const sent = ann.wsLog.find((l) => l.dir === "out" && l.frame.type === "send");
  assert.equal(sent?.frame.attachments?.length, 2, "the send frame names both files");
  assert.ok(sent.frame.attachments.every((id) => /^[0-9a-f]{32}$/.test(id)), JSON.stringify(sent.frame));

  await bob.goto(`${cluster.urls[0]}/#/c/${encodeURIComponent(conv)}`);
  const img = bob.locator("[data-testid=attachment-image]");
  await img.waitFor();
  assert.equal(await img.getAttribute("width"), "320");
  assert.equal(await img.getAttribute("height"), "240");
  assert.equal(await img.getAttribute("loading"), "lazy");
  await eventually("the thumbnail loads through its signed link", async () => {
    const w = await img.evaluate((el) => el.complete && el.naturalWidth);
    if (!(w > 0)) throw new Error(`naturalWidth ${w}`);
    assert.equal(w, 320);
    return true;
  });
  const card = bob.locator("[data-testid=attachment-file]");
  await card.waitFor();
  assert.match(await card.innerText(), /notes\.txt/);
  assert.match(await card.innerText(), /2\.4 kB/);
  assert.equal(await card.getAttribute("download"), "notes.txt");
  assert.match(await card.getAttribute("href"), /^\/v1\/media\/[0-9a-f]{32}\?exp=\d+&sig=/);
  // The signed link gives the file's bytes without a token.
  const bytes = await bob.evaluate(async (href) => (await (await fetch(href)).text()).length, await card.getAttribute("href"));
  assert.equal(bytes, 2400);
  await bob.screenshot({ path: join(artifacts, "attachments-received.png") });

  await img.click();
  const full = bob.locator("[data-testid=image-viewer] img");
  await full.waitFor();
  await eventually("the full image loads", async () => {
    assert.equal(await full.evaluate((el) => el.naturalWidth), 400);
    return true;
  });
  assert.equal(await bob.locator("[data-testid=image-viewer] a[download]").getAttribute("download"), "stripes.png");
  await bob.screenshot({ path: join(artifacts, "viewer.png") });
  await bob.keyboard.press("Escape");
  await bob.waitForSelector("[data-testid=image-viewer]", { state: "detached" });
  // A click beside the image closes it too.
  await img.click();
  await bob.waitForSelector("[data-testid=image-viewer]");
  await bob.mouse.click(5, 5);
  await bob.waitForSelector("[data-testid=image-viewer]", { state: "detached" });

  // A pasted image becomes an upload of the composer.
  await bob.evaluate((bytes) => {
    const file = new File([new Uint8Array(bytes)], "pasted.png", { type: "image/png" });
    const data = new DataTransfer();
    data.items.add(file);
    const ta = document.querySelector("[data-testid=composer]");
    ta.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  }, [...png(20, 20)]);
  await bob.waitForSelector("[data-testid=attachment-chip][data-done=yes]:has-text('pasted.png')");
  // A file dropped on the conversation (not only the composer) too.
  await bob.evaluate(() => {
    const data = new DataTransfer();
    data.items.add(new File(["dropped words"], "dropped.txt", { type: "text/plain" }));
    const target = document.querySelector(".messages");
    for (const type of ["dragenter", "dragover", "drop"]) {
      target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
    }
  });
  await bob.waitForSelector("[data-testid=attachment-chip][data-done=yes]:has-text('dropped.txt')");
  assert.equal(await bob.locator(".conversation.dragging").count(), 0, "the drop highlight goes");
  await bob.screenshot({ path: join(artifacts, "paste-drop.png") });
  await bob.click(".composer button[type=submit]");
  const fromBob = ann.locator(`[data-testid=message]:has(strong:text-is("${bob.user}"))`);
  await fromBob.locator("[data-testid=attachment-file]:has-text('dropped.txt')").waitFor();
  assert.equal(await fromBob.locator("[data-testid=attachment-image]").count(), 1, "the pasted image");
  assert.equal(await fromBob.locator(".body").count(), 0, "no text");
  assert.match(await ann.locator(`[data-testid=conversation][data-id="${conv}"] .last`).innerText(), /📎 pasted\.png, dropped\.txt/);
  assert.deepEqual(ann.errors, []);
  assert.deepEqual(bob.errors, []);
});

test("a message sent while its file uploads goes once the upload is done", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  const conv = await startGroup(ann, [bob.user]);
  // Each upload held back for a while, as on a slow link.
  await ann.route("**/v1/media?*", async (route) => {
    await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  });
  await ann.setInputFiles("[data-testid=attach-input]", [{ name: "slow.txt", mimeType: "text/plain", buffer: Buffer.from("slow") }]);
  await ann.fill("[data-testid=composer]", "with the slow file");
  await ann.keyboard.press("Enter");
  await ann.waitForSelector(".composer [role=status]:has-text('Sending once')");
  await bob.goto(`${cluster.urls[0]}/#/c/${encodeURIComponent(conv)}`);
  const msg = bob.locator("[data-testid=message]:has-text('with the slow file')");
  await msg.waitFor();
  assert.match(await msg.locator("[data-testid=attachment-file]").innerText(), /slow\.txt/);
  assert.equal(await ann.locator("[data-testid=attachment-chip]").count(), 0);
  assert.deepEqual(ann.errors, []);
});

test("refused uploads say why in plain words; a removed upload frees its room", async () => {
  const ann = await signUp("ann");
  await startGroup(ann, [(await signUp("bob")).user]);
  const chip = (name) => ann.locator(`[data-testid=attachment-chip]:has-text('${name}')`);
  // Over the node's limit (2 MB here).
  await ann.setInputFiles("[data-testid=attach-input]", [{ name: "huge.bin", mimeType: "application/octet-stream", buffer: randomBytes(2_500_000) }]);
  await chip("huge.bin").locator("[role=alert]").waitFor();
  assert.match(await chip("huge.bin").innerText(), /The file is too large \(the limit is 2\.0 MB\)/);
  assert.equal(await chip("huge.bin").getAttribute("data-failed"), "yes");
  // Past the quota (3 MB here): one 1.8 MB file fits, a second does not.
  await ann.setInputFiles("[data-testid=attach-input]", [{ name: "one.bin", mimeType: "application/octet-stream", buffer: randomBytes(1_800_000) }]);
  await ann.locator("[data-testid=attachment-chip][data-done=yes]:has-text('one.bin')").waitFor();
  await ann.setInputFiles("[data-testid=attach-input]", [{ name: "two.bin", mimeType: "application/octet-stream", buffer: randomBytes(1_800_000) }]);
  await chip("two.bin").locator("[role=alert]").waitFor();
  assert.match(await chip("two.bin").innerText(), /no room left for files \(your quota is 3\.0 MB\)/);
  assert.ok(await ann.locator(".composer button[type=submit]").isEnabled(), "one file is ready");
  await ann.screenshot({ path: join(artifacts, "upload-errors.png") });
  // Removing the stored one takes it back from the quota: the next fits.
  await chip("one.bin").locator("button[aria-label^=Remove]").click();
  await chip("two.bin").locator("button[aria-label^=Remove]").click();
  await chip("huge.bin").locator("button[aria-label^=Remove]").click();
  assert.equal(await ann.locator("[data-testid=attachment-chip]").count(), 0);
  assert.ok(await ann.locator(".composer button[type=submit]").isDisabled(), "nothing left to send");
  await eventually("the room is back", async () => {
    await ann.setInputFiles("[data-testid=attach-input]", [{ name: "three.bin", mimeType: "application/octet-stream", buffer: randomBytes(1_800_000) }]);
    const done = ann.locator("[data-testid=attachment-chip]:has-text('three.bin')");
    await ann.waitForFunction(() => document.querySelector("[data-testid=attachment-chip][data-done=yes], [data-testid=attachment-chip][data-failed=yes]"));
    const ok = (await done.getAttribute("data-done")) === "yes";
    if (!ok) await done.locator("button[aria-label^=Remove]").click();
    return ok;
  }, 10_000);
  // The refusals' statuses, as Chromium logs them, and nothing else.
  assert.deepEqual(
    ann.errors.filter((e) => !/status of (413|403)/.test(e)),
    [],
  );
});

test("search finds a message and opens it in its conversation with the history around it", async () => {
  const ann = await signUp("ann");
  const bob = await signUp("bob");
  const conv = await startGroup(ann, [bob.user]);
  const word = unique("zebra");
  const send = (body) =>
    ann.evaluate(
      async ([conv, body, key]) => {
        const token = JSON.parse(localStorage.getItem("chat.session")).access;
        const res = await fetch(`/v1/conversations/${encodeURIComponent(conv)}/messages`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ client_msg_id: key, body }),
        });
        return (await res.json()).message.id;
      },
      [conv, body, unique("k")],
    );
  const target = await send(`the ${word} crossing is at noon`);
  // Enough after it that the conversation opens far from it.
  for (let i = 0; i < 120; i++) await send(`filler ${i}`);
  await bob.goto(cluster.urls[0] + "/#/");
  await eventually("the search finds it", async () => {
    await bob.fill("[data-testid=search-input]", word);
    await bob.keyboard.press("Enter");
    const hit = bob.locator(`[data-testid=search-result][data-id="${target}"]`);
    await hit.waitFor({ timeout: 1000 });
    return true;
  });
  const hit = bob.locator(`[data-testid=search-result][data-id="${target}"]`);
  assert.match(await hit.innerHTML(), new RegExp(`<mark>${word}</mark>`, "i"));
  await bob.screenshot({ path: join(artifacts, "search.png") });
  await hit.click();
  const shown = bob.locator(`[data-testid=message][data-id="${target}"][data-focused=yes]`);
  await shown.waitFor();
  assert.ok(await shown.isVisible(), "scrolled to");
  // The history around it: a message before it (the group's start) and after.
  const ids = await bob.locator("[data-testid=message]").evaluateAll((els) => els.map((e) => e.dataset.id));
  const at = ids.indexOf(target);
  assert.ok(at >= 0 && at < ids.length - 1, `${at} of ${ids.length}`);
  await bob.screenshot({ path: join(artifacts, "search-jump.png") });
  assert.deepEqual(bob.errors, []);
});
