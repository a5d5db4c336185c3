// The built-in page (`/`) in a real browser: headless Chromium (Debian's
// `chromium`, which scripts/test installs) driven by playwright-core. Run
// by tests/page.rs, which owns the server:
//
//   node page_check.js watch http://ADDR      the trader's and operator's views, then a restart
//   node page_check.js keys  http://ADDR KEY ADMIN_KEY  a server with API keys: /status needs an admin key
//   node page_check.js tls   https://localhost:PORT     the page over https, its socket over wss (the
//                                                       test certificate's errors ignored)
//
// `watch` prints `STOP` when the server should go away and `START` when it
// should come back on the same port; tests/page.rs reads those lines.
// Every wait is a generous wait-for: nothing here asserts how fast.
// TICKCAST_SCREENSHOT=path.png writes what the page looks like (`watch`,
// before the restart); CHROMIUM=path picks the browser.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const WAIT_MS = 20000;

function browserPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    for (const name of ["chromium", "chromium-browser"]) {
      const p = path.join(dir, name);
      if (fs.existsSync(p)) return p;
    }
  }
  throw new Error("no chromium on PATH (scripts/test installs Debian's `chromium`)");
}

function step(what) { console.log("# " + what); }

/// Wait for `fn(arg)` to hold in the page; fails naming `what`.
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  } catch (e) {
    const body = await page.evaluate(() => document.body.innerText).catch(() => "(page gone)");
    throw new Error(`the page never showed ${what}\n--- page text ---\n${body}`);
  }
}

/// The ltp column of every subscribed row, as shown.
const prices = (page) => page.$$eval("#rows tr:not(.rejected):not(.depth) td.ltp", (tds) => tds.map((t) => t.textContent));

/// Wait until a shown price differs from what `prices` read now: data flows.
async function pricesMove(page, what) {
  const before = await prices(page);
  await until(page, what, (b) => {
    const now = [...document.querySelectorAll("#rows tr:not(.rejected):not(.depth) td.ltp")].map((t) => t.textContent);
    return now.length === b.length && now.some((p, i) => p !== "" && p !== b[i]);
  }, before);
}

/// `/status` as the page's origin sees it.
const status = (page, key) => page.evaluate(async (k) => (await fetch("/status?api_key=" + k)).json(), key || "");

async function watch(page, base) {
  const t0 = Date.now();
  await page.goto(base + "/");
  step("the default watchlist from the master shows prices without a click");
  await until(page, "eight rows with prices", () => {
    const ltps = [...document.querySelectorAll("#rows tr td.ltp")].map((t) => t.textContent);
    return ltps.length === 8 && ltps.every((p) => /\d/.test(p));
  });
  await until(page, "the connection live", () => document.getElementById("conn").textContent === "live");
  await pricesMove(page, "a price changing");
  step(`prices moved ${Date.now() - t0} ms after the page was opened (information, not a limit)`);
  const url = new URL(page.url());
  if (url.searchParams.get("symbols").split(",").length !== 8) throw new Error("the watchlist is not kept in the URL: " + page.url());

  step("an unknown symbol is shown as rejected, with the server's reason");
  await page.fill("#add-input", "nosuchsym");
  await page.press("#add-input", "Enter");
  await until(page, "NOSUCHSYM rejected as an unknown symbol", () => {
    const r = document.querySelector('#rows tr.rejected[data-entry="NOSUCHSYM"]');
    return r && /unknown symbol/.test(r.textContent);
  });
  if (!page.url().includes("NOSUCHSYM")) throw new Error("an added entry is not kept in the URL: " + page.url());

  step("quote mode: change against the close, up/down colouring, bid/ask, data age");
  await until(page, "change %, bid, ask and an age on every row", () =>
    [...document.querySelectorAll("#rows tr:not(.rejected):not(.depth)")].every((r) =>
      /\d/.test(r.querySelector("td.chg").textContent) && /\d/.test(r.querySelector("td.bid").textContent) &&
      /\d/.test(r.querySelector("td.ask").textContent) && /\ds$/.test(r.querySelector("td.age").textContent)));
  await until(page, "a price coloured by its direction", () => document.querySelector("#rows td.ltp.up, #rows td.ltp.down") !== null);

  step("operator view: feed health from heartbeats, the server's figures and chart from /status");
  await until(page, "the sim feed live", () => /sim\s*live/.test(document.getElementById("feeds").innerText));
  // connections: the page's two links, and the socket of its /status request while it is open
  await until(page, "the page's connections and its eight subscriptions", () =>
    Number(document.querySelector("dd.fig-connections")?.textContent) >= 2 && document.querySelector("dd.fig-subscriptions")?.textContent === "8");
  await until(page, "deliveries per second and latency figures", () =>
    /\d/.test(document.querySelector("dd.fig-deliveries-s")?.textContent) && /[µm]s/.test(document.querySelector("dd.fig-latency-p99")?.textContent));
  await until(page, "a few points on the latency chart", () => series.length >= 3);
  if (process.env.TICKCAST_SCREENSHOT) {
    await page.screenshot({ path: process.env.TICKCAST_SCREENSHOT, fullPage: true });
    step("screenshot: " + process.env.TICKCAST_SCREENSHOT);
  }

  step("depth mode shows the book; back to quote");
  await page.selectOption("#mode", "depth");
  await until(page, "a book under every row", () =>
    document.querySelectorAll("#rows tr.depth .book").length === 8 && /depth/.test(location.search));
  await page.selectOption("#mode", "quote");
  await until(page, "the books gone", () => document.querySelectorAll("#rows tr.depth").length === 0);

  step("removing a row unsubscribes it on the server");
  const gone = await page.$eval("#rows tr:not(.rejected)", (r) => r.dataset.entry);
  await page.click(`#rows tr[data-entry="${gone}"] td.x button`);
  await until(page, "the row gone", (e) => !document.querySelector(`#rows tr[data-entry="${e}"]`), gone);
  for (let i = 0; ; i++) {
    if ((await status(page)).subscriptions === 7) break;
    if (i * 100 > WAIT_MS) throw new Error("the server still counts 8 subscriptions after the row was removed");
    await page.waitForTimeout(100);
  }

  step("a dropped connection comes back as the same client_id with its subscriptions");
  await page.evaluate(() => link.ws.close());
  await until(page, "the session resumed with 7 subscriptions", () =>
    document.getElementById("conn").textContent === "live" && /session resumed: 7 restored/.test(document.getElementById("conn-detail").textContent));
  await pricesMove(page, "prices moving on the resumed session");

  step("the server goes away: the page says so");
  console.log("STOP");
  await until(page, "disconnected", () => document.getElementById("conn").textContent === "disconnected");
  await until(page, "status unavailable", () => /unreachable/.test(document.getElementById("status-note").textContent));

  step("the server comes back on the same port: the page reconnects and resubscribes");
  console.log("START");
  await until(page, "live again", () => document.getElementById("conn").textContent === "live");
  await until(page, "a new session (the old server's sessions went with it)", () => /new session/.test(document.getElementById("conn-detail").textContent));
  await pricesMove(page, "prices moving after the restart");
  await until(page, "NOSUCHSYM still rejected", () => document.querySelector('#rows tr.rejected[data-entry="NOSUCHSYM"]') !== null);
  await until(page, "the feed live again", () => /sim\s*live/.test(document.getElementById("feeds").innerText));
}

async function keys(page, base, key, adminKey) {
  await page.goto(base + "/?symbols=RELIANCE,tcs&mode=bogus&api_key=" + key);
  step("with API keys the stream works with the key from the URL, which leaves the address bar");
  step("(a lower-case name is taken, an unknown mode is quote)");
  await until(page, "two rows with prices", () =>
    [...document.querySelectorAll("#rows tr td.ltp")].filter((t) => /\d/.test(t.textContent)).length === 2);
  if (page.url().includes("api_key")) throw new Error("the key stays in the address bar: " + page.url());
  if (await page.inputValue("#mode") !== "quote" || !page.url().includes("symbols=RELIANCE,TCS&mode=quote")) {
    throw new Error("the URL's list and mode were not normalised: " + page.url());
  }
  step("/status refuses that key: the page says an admin key is needed and keeps working");
  await until(page, "status needs an admin key", () =>
    /status needs an admin key/.test(document.getElementById("status-note").textContent) && !document.getElementById("key-form").hidden);
  await pricesMove(page, "prices still moving");
  step("a wrong admin key is refused, a right one shows the figures");
  await page.fill("#key-input", "wrong-key");
  await page.press("#key-input", "Enter");
  await until(page, "the key refused", () => /the key given was refused/.test(document.getElementById("status-note").textContent));
  await page.fill("#key-input", adminKey);
  await page.press("#key-input", "Enter");
  await until(page, "the server's figures", () =>
    document.getElementById("key-form").hidden && document.querySelector("dd.fig-subscriptions")?.textContent === "2");
}

/// Over https: the page loads, its WebSocket (wss, from the page's own
/// scheme) streams, and /status answers over the same TLS listener.
async function tls(page, base) {
  await page.goto(base + "/");
  if (new URL(page.url()).protocol !== "https:") throw new Error("not served over https: " + page.url());
  step("over https the watchlist streams through wss");
  await until(page, "eight rows with prices", () => {
    const ltps = [...document.querySelectorAll("#rows tr td.ltp")].map((t) => t.textContent);
    return ltps.length === 8 && ltps.every((p) => /\d/.test(p));
  });
  await until(page, "the connection live", () => document.getElementById("conn").textContent === "live");
  await pricesMove(page, "a price changing over wss");
  const st = await status(page);
  if (!st.tls || !(st.tls.handshakes["TLSv1.3"] > 0)) throw new Error("/status shows no TLS handshakes: " + JSON.stringify(st.tls));
}

(async () => {
  const [scenario, base, key, adminKey] = process.argv.slice(2);
  // Chromium's sandbox cannot start as root (a container's usual user).
  const args = process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [];
  // The TLS test's certificate comes from a CA the browser does not know.
  if (scenario === "tls") args.push("--ignore-certificate-errors");
  const browser = await chromium.launch({ executablePath: browserPath(), args });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 640 }, ignoreHTTPSErrors: scenario === "tls" });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    if (scenario === "watch") await watch(page, base);
    else if (scenario === "keys") await keys(page, base, key, adminKey);
    else if (scenario === "tls") await tls(page, base);
    else throw new Error("usage: page_check.js watch http://ADDR | keys http://ADDR KEY ADMIN_KEY | tls https://HOST:PORT");
    if (errors.length) throw new Error("script errors in the page:\n" + errors.join("\n"));
    console.log("OK");
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
