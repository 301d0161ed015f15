// Sign-in with OpenID Connect in a real browser against a real provider
// (NAV's mock-oauth2-server, from scripts/oidc.sh): the sign-in page offers
// "Sign in with <provider>", the provider's own login form is filled in as
// a person would, and the browser comes back signed in, the tokens taken
// from the URL fragment and dropped from the address bar.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { eventually, freePort, launchBrowser, root, startCluster } from "./cluster.mjs";

let provider;
let cluster;
let browser;
let issuer;

before(async () => {
  const classpath = execFileSync("bash", [join(root, "scripts", "oidc.sh"), "classpath"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  const port = await freePort();
  provider = spawn("java", ["-cp", classpath, "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"], {
    env: { ...process.env, SERVER_PORT: String(port), SERVER_HOSTNAME: "127.0.0.1" },
    stdio: "ignore",
  });
  issuer = `http://127.0.0.1:${port}/default`;
  await eventually(
    "the provider answers",
    async () => (await fetch(`${issuer}/.well-known/openid-configuration`)).ok,
    90_000,
  );
  cluster = await startCluster(1, (urls) => ({
    CHAT__AUTH__OIDC__ISSUER: issuer,
    CHAT__AUTH__OIDC__CLIENT_ID: "chat",
    CHAT__AUTH__OIDC__CLIENT_SECRET: "chat-secret",
    CHAT__AUTH__OIDC__REDIRECT_URL: `${urls[0]}/v1/auth/oidc/callback`,
    CHAT__AUTH__OIDC__NAME: "MockID",
  }));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
  provider?.kill();
});

test("sign in with the provider's own login form, and come back signed in", async () => {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(cluster.urls[0]);
  await page.click("[data-testid=sso]:has-text('Sign in with MockID')");
  // The provider's page: a username and the ID token's claims.
  await page.waitForURL((u) => u.toString().startsWith(issuer));
  const name = `sso${Date.now().toString(36)}`;
  await page.fill("input[name=username]", name);
  await page.fill(
    "textarea[name=claims]",
    JSON.stringify({ email: `${name}@corp.test`, email_verified: true, preferred_username: name }),
  );
  await page.click("form [type=submit]");
  await page.waitForSelector("[data-testid=connection][data-state=open]");
  assert.equal(new URL(page.url()).hash, "", "the tokens are dropped from the address bar");
  const me = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem("chat.session")).access;
    return (await fetch("/v1/me", { headers: { authorization: `Bearer ${token}` } })).json();
  });
  assert.equal(me.id, name);
  assert.equal(me.email_verified, true);
  assert.deepEqual(errors, []);
});
