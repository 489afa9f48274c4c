// What every browser test here shares: Debian's Chromium, headless, kept off the network
// (this machine's closed network refuses Chromium's background connections), and the check
// that stops a test with a reason.
import { chromium } from "playwright-core";

/** Launches Debian's headless Chromium (or the one `CHROMIUM` names). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Throws `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * What `presses` presses of Tab from the top of the page reach: each focused element by its
 * id, else its href, else the start of its text.
 */
export async function reachableByTab(page, presses) {
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  const reached = new Set();
  for (let i = 0; i < presses; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => {
      const e = document.activeElement;
      return e ? (e.id || e.getAttribute("href") || e.textContent.trim().slice(0, 20)) : "";
    }));
  }
  return reached;
}
