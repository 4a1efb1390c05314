// The chat page: two browser contexts (two users) in one room see each other in the member
// list and every message once, their own included; a third joining later gets the history.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  chatMessages as messages,
  launchBrowser,
  newPage,
  showsMessages as shows,
  startHub,
  texts,
  waitConnected,
  waitFor,
  withScreenshot,
} from "./harness.mjs";

let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "chat" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

async function join(page, nick) {
  await page.goto(`${hub.base}/chat?nick=${encodeURIComponent(nick)}&room=lobby`);
  await waitConnected(page);
}

async function members(page, expected) {
  const want = [...expected].sort();
  let seen;
  await waitFor(`#members to be ${want.join(", ")}`, async () => {
    seen = (await texts(page, "#members li")).sort();
    return JSON.stringify(seen) === JSON.stringify(want);
  }).catch((error) => {
    throw new Error(`${error.message} (last seen: ${JSON.stringify(seen)})`);
  });
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

test("two users chat: members, messages once and in order, history for a latecomer", { timeout: 120000 }, async () => {
  const ann = await newPage(browser.browser);
  const bob = await newPage(browser.browser);
  const cid = await newPage(browser.browser);
  await withScreenshot(ann, "chat-ann", async () => {
    await withScreenshot(bob, "chat-bob", async () => {
      await join(ann, "Ann");
      await join(bob, "Bob");
      await members(ann, ["Ann", "Bob"]);
      await members(bob, ["Ann", "Bob"]);
      assert.equal((await hub.api("presence/chat:lobby?stats=true")).clients, 2);

      await say(ann, "Hi Bob, Ann here");
      const one = ["Ann: Hi Bob, Ann here"];
      await shows(bob, one);
      await shows(ann, one);
      assert.equal(await ann.inputValue("#text"), "", "the input is cleared after sending");

      await say(bob, "Hello Ann!");
      await say(ann, "How are you?");
      const three = [...one, "Bob: Hello Ann!", "Ann: How are you?"];
      await shows(ann, three);
      await shows(bob, three);

      // What the hub keeps is what the pages show: data {nick, text}, in that order.
      const history = await hub.api("history/chat:lobby");
      assert.deepEqual(
        history.publications.map((p) => `${p.data.nick}: ${p.data.text}`),
        three,
      );
      // The publishing client's presence info is its nick (connect info).
      assert.deepEqual(history.publications[0].info?.info, { name: "Ann" });

      // A latecomer gets the history, once, then the live messages.
      await withScreenshot(cid, "chat-cid", async () => {
        await join(cid, "Cid");
        await shows(cid, three);
        await members(ann, ["Ann", "Bob", "Cid"]);
        await members(cid, ["Ann", "Bob", "Cid"]);
        await say(cid, "Hi all");
        const four = [...three, "Cid: Hi all"];
        await shows(cid, four);
        await shows(ann, four);
        await shows(bob, four);
        // Nothing repeats later on.
        await new Promise((r) => setTimeout(r, 500));
        for (const page of [ann, bob, cid]) assert.deepEqual(await messages(page), four);
      });

      // Cid leaves: the others see it in the member list.
      await cid.context().close();
      await members(ann, ["Ann", "Bob"]);
      await members(bob, ["Ann", "Bob"]);
      for (const page of [ann, bob]) assert.deepEqual(page.problems, []);
    });
  });
  await ann.context().close();
  await bob.context().close();
});
