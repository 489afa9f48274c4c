// Opens the consortium view of a finished run LOADS times in Debian's headless Chromium and
// prints, as JSON, the milliseconds until it is drawn (rounds table full, privacy chart,
// members and blocks) and until the page's own header-chain check reaches the tip. Used by
// examples/console_scale.rs:  node load.mjs URL ROUNDS LOADS
import { launch } from "./launch.mjs";

const [url, roundsArg, loadsArg] = process.argv.slice(2);
const rounds = Number(roundsArg);
const loads = Number(loadsArg ?? 5);
const browser = await launch();
const loaded = [];
const verified = [];
try {
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction((n) =>
      document.querySelectorAll("#rounds-table tbody tr").length >= n
      && document.querySelector("#privacy-chart svg")
      && document.querySelectorAll("#members-table tbody tr").length > 0
      && document.querySelectorAll("#blocks-table tbody tr").length > 0, rounds, { timeout: 60_000, polling: 10 });
    loaded.push(Date.now() - t0);
    await page.waitForSelector(`#verified-badge.ok:has-text('up to height ${rounds}')`, { timeout: 120_000 });
    verified.push(Date.now() - t0);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ loaded, verified }));
