// The consortium view in Debian's headless Chromium, driven by Playwright: rounds appear as a
// simulation runs, the page's own ledger check reaches the tip, an inclusion proof verifies
// in the page and a forged one does not, every control is reachable by keyboard, axe-core
// finds no serious or critical violation, and the page runs under its CSP without a refused
// script or style. Called by tests/console.rs:
//
//   node consortium.mjs URL STEPS SCREENSHOT_DIR
//
// Prints one JSON line of measurements; exits non-zero, saying why, at the first failure.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { check, launch, reachableByTab } from "./launch.mjs";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const [url, stepsArg, shots] = process.argv.slice(2);
const steps = Number(stepsArg);
if (!url || !Number.isInteger(steps) || !shots) {
  console.error("usage: node consortium.mjs URL STEPS SCREENSHOT_DIR");
  process.exit(2);
}

const browser = await launch();
const measured = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });

  // Rounds appear as they happen: the page is opened while the run is young, and the table
  // grows to every step without a reload.
  const opened = Date.now();
  await page.goto(url);
  await page.waitForSelector("#run-status:not(:has-text('Loading'))");
  const rowsAtFirst = await page.locator("#rounds-table tbody tr").count();
  measured.rows_when_opened = rowsAtFirst;
  await page.waitForFunction(
    (n) => document.querySelectorAll("#rounds-table tbody tr").length >= n,
    steps,
    { timeout: 120_000 },
  );
  measured.seconds_until_all_rounds = (Date.now() - opened) / 1000;
  check(rowsAtFirst < steps, `the run had finished (${rowsAtFirst} rows) before the page could watch it`);
  await page.waitForSelector("#run-status:has-text('finished')", { timeout: 120_000 });

  // The page's own chain check reaches the ledger's tip.
  const consortium = await (await page.request.get(new URL("/api/v1/consortium", url).href)).json();
  const height = consortium.ledger.height;
  await page.waitForSelector(`#verified-badge.ok:has-text('up to height ${height}')`, { timeout: 30_000 });
  measured.ledger_height = height;

  // Charts are drawn: one line per hospital in the privacy chart, AUROC points per round.
  const privacyLines = await page.locator("#privacy-chart svg path").count();
  check(privacyLines === consortium.ledger.consent.length,
    `privacy chart has ${privacyLines} lines for ${consortium.ledger.consent.length} hospitals`);
  check(await page.locator("#auroc-chart svg path").count() === 1, "no AUROC line");
  check(await page.locator("#norm-chart svg path").count() === 1, "no range-check line");

  // An inclusion proof verifies in the page.
  await page.locator("#blocks-table button", { hasText: "verify" }).first().click();
  await page.waitForSelector("#proof-result.ok", { timeout: 10_000 });
  const verified = await page.locator("#proof-result").textContent();
  check(verified.startsWith("Verified"), `proof result: ${verified}`);

  // A forged proof does not: the transaction's bytes changed in flight (a tampering proxy,
  // or a damaged ledger file) no longer lead to the block's root.
  await page.route("**/api/v1/transactions/*/proof", async (route) => {
    const response = await route.fetch();
    const proof = await response.json();
    const flipped = (parseInt(proof.tx.slice(-2), 16) ^ 1).toString(16).padStart(2, "0");
    proof.tx = proof.tx.slice(0, -2) + flipped;
    await route.fulfill({ response, json: proof });
  });
  await page.locator("#blocks-table button", { hasText: "verify" }).first().click();
  await page.waitForSelector("#proof-result.bad", { timeout: 10_000 });
  const refused = await page.locator("#proof-result").textContent();
  check(/Merkle path|signature/.test(refused), `forged proof: ${refused}`);
  await page.unroute("**/api/v1/transactions/*/proof");

  // A genuine proof of another transaction, served for the one asked about, is refused too.
  const ids = await page.locator("#blocks-table code").evaluateAll((cs) => cs.map((c) => c.title));
  check(ids.length >= 2, "two transactions to swap");
  await page.route(`**/api/v1/transactions/${ids[0]}/proof`, async (route) => {
    const other = await route.fetch({ url: new URL(`/api/v1/transactions/${ids[1]}/proof`, url).href });
    await route.fulfill({ response: other });
  });
  await page.fill("#tx-id", ids[0]);
  await page.locator("#proof-form button[type=submit]").click();
  await page.waitForSelector("#proof-result.bad", { timeout: 10_000 });
  const swapped = await page.locator("#proof-result").textContent();
  check(swapped.includes("the proof is for transaction"), `a swapped proof: ${swapped}`);
  await page.unroute(`**/api/v1/transactions/${ids[0]}/proof`);

  // A genesis other than the one pinned in the address is refused, whatever the server says.
  const pinnedElsewhere = await browser.newPage();
  await pinnedElsewhere.goto(`${url}#genesis=${"0".repeat(64)}`);
  await pinnedElsewhere.waitForSelector("#verified-badge.bad:has-text('not the one pinned in the address')", { timeout: 10_000 });
  await pinnedElsewhere.close();

  // A browser that pinned another genesis refuses this one, and re-pins only when told to.
  await page.evaluate(() => localStorage.setItem(`medfl.genesis.${location.host}`, "11".repeat(32)));
  await page.reload();
  await page.waitForSelector("#verified-badge.bad:has-text('not the one this browser pinned')", { timeout: 10_000 });
  await page.click("#repin");
  await page.waitForSelector("#verified-badge.ok", { timeout: 30_000 });

  // A malformed id typed by hand gets a clear message, not a request.
  await page.fill("#tx-id", "not-a-transaction");
  await page.locator("#proof-form button[type=submit]").click();
  const typed = await page.locator("#proof-result").textContent();
  check(/64 hex digits|match the requested format/.test(typed) || !(await page.locator("#tx-id").evaluate((e) => e.checkValidity())),
    `a malformed id: ${typed}`);

  // Every control is reachable by keyboard: Tab from the top reaches the skip link, the
  // section links, the proof form and the first block's verify button.
  await page.goto(url);
  await page.waitForSelector(`#verified-badge.ok`, { timeout: 30_000 });
  const reached = await reachableByTab(page, 40);
  for (const want of ["#main", "#rounds", "#ledger", "tx-id", "verify"]) {
    check(reached.has(want), `Tab never reaches ${want} (reached: ${[...reached].join(", ")})`);
  }
  measured.tab_stops_checked = reached.size;

  // axe-core, run inside the page (evaluated through the DevTools protocol, so the page's
  // CSP stays as it is): no serious or critical violation.
  await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `axe: ${bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.length} nodes`).join("; ")}`);
  measured.axe_violations_minor = results.violations.length;

  // Load time of the finished run's view: navigation until the rounds table is full.
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction((n) => document.querySelectorAll("#rounds-table tbody tr").length >= n, steps);
  measured.load_ms = Date.now() - t0;

  await page.screenshot({ path: `${shots}/consortium.png`, fullPage: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${shots}/consortium-top.png` });
  check(problems.length === 0, problems.join("\n"));
  console.log(JSON.stringify(measured));
} finally {
  await browser.close();
}
