// Files after a failover, in a real browser against a real two-node
// cluster sharing one media directory: a page served by node 1 keeps
// uploading and showing pictures once node 1 is dead and the page is on
// node 2 (the links a node signs are paths; the page loads them from the
// node it is on, not from its dead origin).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, launchBrowser, root, startCluster, PASSWORD, unique, register, watchErrors } from "./cluster.mjs";
import { png } from "./images.mjs";

const artifacts = join(root, "web", "test-artifacts");
let cluster;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  // One directory for both nodes stands in for a shared object store.
  const media = mkdtempSync(join(tmpdir(), "chat-web-media-"));
  cluster = await startCluster(2, { CHAT__MEDIA__DIR: media });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
});

async function signUp(prefix, node) {
  const p = await (await browser.newContext()).newPage();
  watchErrors(p);
  await p.goto(node);
  await register(p, prefix);
  return p;
}

/** Attaches a `w` x `h` PNG with `text` and sends it. */
async function sendPicture(p, name, w, h, text) {
  await p.setInputFiles("[data-testid=attach-input]", [{ name, mimeType: "image/png", buffer: png(w, h) }]);
  await p.waitForSelector(`[data-testid=attachment-chip][data-done=yes]:has-text('${name}')`, { timeout: 60_000 });
  await p.fill("[data-testid=composer]", text);
  await p.keyboard.press("Enter");
}

/** Waits until the picture of the message saying `text` has loaded: its
 * natural width, and where it came from. */
async function loaded(p, text, width) {
  const img = p.locator(`[data-testid=message]:has-text("${text}") [data-testid=attachment-image]`);
  await img.waitFor({ timeout: 90_000 });
  return eventually(`the picture of "${text}" loads`, async () => {
    const [w, src] = await img.evaluate((el) => [el.complete && el.naturalWidth, el.currentSrc]);
    if (w !== width) throw new Error(`naturalWidth ${w} from ${src}`);
    return src;
  }, 90_000);
}

test("after the page's own node dies, pictures still upload and show from the node it moved to", async () => {
  const [one, two] = cluster.urls;
  const ann = await signUp("ann", one);
  const bob = await signUp("bob", two);
  await ann.selectOption("select[aria-label=Kind]", "group");
  await ann.fill("[data-testid=new-members]", bob.user);
  await ann.click("[data-testid=start]");
  await ann.waitForFunction(() => location.hash.startsWith("#/c/"));
  const conv = decodeURIComponent(await ann.evaluate(() => location.hash.slice(4)));
  await bob.goto(`${two}/#/c/${encodeURIComponent(conv)}`);
  await bob.waitForSelector("[data-testid=connection][data-state=open]");

  await sendPicture(bob, "before.png", 120, 60, "before the failover");
  assert.ok((await loaded(ann, "before the failover", 120)).startsWith(one + "/v1/media/"), "from its own node at first");

  // What Ann sees from here on can only reach her through node 2.
  cluster.kill(0);

  await sendPicture(bob, "after.png", 200, 100, "after the failover");
  const src = await loaded(ann, "after the failover", 200);
  assert.ok(src.startsWith(two + "/v1/media/"), `loaded from the live node: ${src}`);
  // Ann's own upload goes to the live node too, and Bob sees it.
  await sendPicture(ann, "reply.png", 80, 40, "a reply with a picture");
  await loaded(bob, "a reply with a picture", 80);
  await loaded(ann, "a reply with a picture", 80);
  await ann.screenshot({ path: join(artifacts, "media-after-failover.png") });
  // The dead node's connection failures are the only console errors.
  const allowed = /WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/;
  assert.deepEqual(ann.errors.filter((e) => !allowed.test(e)), []);
  assert.deepEqual(bob.errors, []);
});
