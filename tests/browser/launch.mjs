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
