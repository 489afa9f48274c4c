// The hospital console and the consortium view of a running networked consortium, in Debian's
// headless Chromium: an officer signs in with a token, an alert arrives live and is
// acknowledged, a patient's opt-out is recorded and appears in the coordinator's ledger
// explorer, where its inclusion proof verifies; a request without a valid token, a write
// without the CSRF token, a cross-site write and an auditor's write are refused, and nothing
// is written for them. Called by tests/console.rs:
//
//   node hospital.mjs CONSORTIUM_URL MONITOR_URL OFFICER_TOKEN AUDITOR_TOKEN SCREENSHOT_DIR
//
// Prints one JSON line of measurements; exits non-zero, saying why, at the first failure.

import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { check, launch, reachableByTab } from "./launch.mjs";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const [consortiumUrl, monitorUrl, officerToken, auditorToken, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node hospital.mjs CONSORTIUM_URL MONITOR_URL OFFICER_TOKEN AUDITOR_TOKEN SCREENSHOT_DIR");
  process.exit(2);
}
const monitor = (path) => new URL(path, monitorUrl).href;

async function axe(page, what) {
  await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `axe on ${what}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target).join(" ")}`).join("; ")}`);
}

/** An access the monitor alerts on by rule: break-the-glass is allowed and always alerted. */
function breakGlass(user, patient) {
  return {
    user, role: "nurse", department: "emergency", patient, patient_department: "oncology",
    action: "view", resource: "clinical_note", time_ms: Date.now(), source_ip: "10.1.2.3",
    workstation: "ws-er-4", break_glass: true, care_team: false, vip: false, family_link: false,
  };
}

async function auditLength() {
  const text = await (await fetch(monitor("/metrics"))).text();
  const line = text.split("\n").find((l) => l.startsWith("medfl_monitor_log_records "));
  return line ? Number(line.split(" ").pop()) : NaN;
}

// The attacker's page: another origin that tries to make the officer's browser write.
const evil = createServer((req, res) => {
  res.setHeader("Content-Type", "text/html");
  res.end(`<!doctype html><html lang="en"><title>prize</title><body>
<form id="f" method="POST" action="${monitor("/v1/unblock")}" enctype="text/plain">
<input name='{"user":"u-er-nurse-1","note":"x","pad":"' value='"}'></form>
<script>
fetch(${JSON.stringify(monitor("/v1/access"))}, { method: "POST", mode: "no-cors",
  body: new Blob([${JSON.stringify(JSON.stringify(breakGlass("u-colleague-9", "p-2002")))}]) })
  .finally(() => fetch(${JSON.stringify(monitor("/v1/consent"))}, { method: "POST", mode: "no-cors", credentials: "include",
    headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ patient: "p-evil", choice: "opt-out", note: "" }) }))
  .finally(() => document.getElementById("f").submit());
</script></body></html>`);
});
await new Promise((r) => evil.listen(0, "127.0.0.1", r));
const evilUrl = `http://localhost:${evil.address().port}/`;

const browser = await launch();
const measured = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

  // Without a valid token, nothing is read.
  for (const path of ["/v1/alerts", "/v1/cases", "/v1/privacy", "/v1/patients/p-1/accesses", "/v1/blocked"]) {
    const r = await fetch(monitor(path));
    check(r.status === 401, `GET ${path} without a token: ${r.status}`);
    const forged = await fetch(monitor(path), { headers: { Authorization: `Bearer ${"ab".repeat(32)}` } });
    check(forged.status === 401, `GET ${path} with a made-up token: ${forged.status}`);
  }

  // The consortium view of the running coordinator: rounds appear.
  await page.goto(consortiumUrl);
  await page.waitForFunction(() => document.querySelectorAll("#rounds-table tbody tr").length >= 1, null, { timeout: 120_000 });
  await page.waitForSelector("#verified-badge.ok", { timeout: 30_000 });
  measured.rounds_seen = await page.locator("#rounds-table tbody tr").count();
  await axe(page, "the consortium view");

  // Signing in: a wrong token is refused with a reason; the officer's opens the console.
  await page.goto(monitor("/console"));
  await page.waitForSelector("#sign-in:not([hidden])");
  await page.fill("#token", "cd".repeat(32));
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#sign-in-result:has-text('Not signed in')");
  await axe(page, "the sign-in page");
  const signInStops = await reachableByTab(page, 6);
  for (const want of ["#main", "token", "Sign in"]) {
    check(signInStops.has(want), `Tab never reaches ${want} on the sign-in page (reached: ${[...signInStops].join(", ")})`);
  }
  await page.fill("#token", officerToken);
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#console:not([hidden])");
  await page.waitForSelector("#who:has-text('(officer)')");
  const cookies = await context.cookies(monitorUrl);
  const cookie = cookies.find((c) => c.name === "medfl_session");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `session cookie: ${JSON.stringify(cookie)}`);
  check(!(await page.evaluate(() => document.cookie)).includes("medfl_session"), "a script can read the session cookie");

  // An alert arrives live, without a reload, and is acknowledged.
  await page.waitForSelector("#stream-status:has-text('Live')", { timeout: 10_000 });
  const sent = Date.now();
  const decided = await (await fetch(monitor("/v1/access"), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(breakGlass("u-er-nurse-1", "p-1001")),
  })).json();
  check(decided.verdict === "alert", `break-the-glass decision: ${JSON.stringify(decided)}`);
  const row = page.locator(`#alerts-table tr[data-record="${decided.record}"]`);
  await row.waitFor({ timeout: 10_000 });
  measured.alert_live_ms = Date.now() - sent;
  check((await row.textContent()).includes("reviewed on its own"), "the row says why break-the-glass adds no case evidence");
  // The declared emergency joins the break-the-glass queue, open until acknowledged.
  const glass = page.locator("#break-glass-table tbody tr", { hasText: "u-er-nurse-1" });
  await glass.waitFor({ timeout: 10_000 });
  check((await glass.locator("td").nth(3).textContent()) === "1", `open emergency: ${await glass.textContent()}`);
  // The role policy's queue sits beside it (no access of this test breaks the policy).
  await page.waitForSelector("#role-policy-table tbody tr:has-text('No access broke the role policy.')");
  await row.locator("input").fill("called the ER: a real emergency");
  await row.locator("button", { hasText: "Acknowledge" }).click();
  await page.waitForSelector(`#alerts-table tr[data-record="${decided.record}"] td:has-text('acknowledged by')`);
  await page.waitForSelector("#action-result.ok");
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll("#break-glass-table tbody tr")].find((r) => r.textContent.includes("u-er-nurse-1"));
    return row && row.cells[3].textContent === "0";
  }, null, { timeout: 10_000 });
  // A second emergency is acknowledged from the queue itself, as one whose alert has left the
  // list would be.
  const second = await (await fetch(monitor("/v1/access"), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(breakGlass("u-er-nurse-1", "p-1002")),
  })).json();
  check(second.verdict === "alert", `second break-the-glass decision: ${JSON.stringify(second)}`);
  const queued = page.locator("#break-glass-table tbody tr", { hasText: "u-er-nurse-1" });
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll("#break-glass-table tbody tr")].find((r) => r.textContent.includes("u-er-nurse-1"));
    return row && row.cells[2].textContent === "2" && row.cells[3].textContent === "1";
  }, null, { timeout: 10_000 });
  await queued.locator("input").fill("the same emergency, a second patient");
  await queued.locator("button", { hasText: "Acknowledge" }).click();
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll("#break-glass-table tbody tr")].find((r) => r.textContent.includes("u-er-nurse-1"));
    return row && row.cells[3].textContent === "0" && row.cells[4].textContent === "all acknowledged";
  }, null, { timeout: 10_000 });
  await page.waitForSelector(`#alerts-table tr[data-record="${second.record}"] td:has-text('acknowledged by')`);

  // The patient-access report lists the access; each reading of a report is logged first.
  const beforeReports = await auditLength();
  await page.fill("#report-patient", "p-1001");
  await page.click("#report-form button[type=submit]");
  await page.waitForSelector("#report-table:not([hidden]) tbody tr");
  const reportText = await page.locator("#report-table").textContent();
  check(reportText.includes("u-er-nurse-1") && reportText.includes("break-the-glass"), `report: ${reportText}`);
  await page.fill("#activity-user", "u-er-nurse-1");
  await page.click("#activity-form button[type=submit]");
  await page.waitForSelector("#activity-table:not([hidden]) tbody tr");
  check((await auditLength()) === beforeReports + 2, "the two report readings are two records");

  // Writes the server must refuse, with nothing logged for them.
  const before = await auditLength();
  check(Number.isFinite(before), "the monitor's metrics name the audit log's length");
  const csrf = await page.evaluate(() => fetch("/v1/session").then((r) => r.json()).then((s) => s.csrf));
  // The session cookie without the CSRF token.
  const noCsrf = await page.evaluate(() => fetch("/v1/consent", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ patient: "p-2", choice: "opt-out", note: "" }),
  }).then((r) => r.status));
  check(noCsrf === 403, `a write without the CSRF token: ${noCsrf}`);
  // A report reading writes a record, so it too needs the token through a session.
  const readNoCsrf = await page.evaluate(() => fetch("/v1/patients/p-1001/accesses").then((r) => r.status));
  check(readNoCsrf === 403, `a report reading without the CSRF token: ${readNoCsrf}`);
  // With the token, but from another origin (the request a rebinding or a proxy could make).
  const crossOrigin = await page.request.post(monitor("/v1/consent"), {
    headers: { "X-CSRF-Token": csrf, Origin: "http://evil.example", "Content-Type": "application/json" },
    data: { patient: "p-2", choice: "opt-out", note: "" },
  });
  check(crossOrigin.status() === 403, `a write from another origin: ${crossOrigin.status()}`);
  // The attacker's page: its form post and fetch carry no session cookie (SameSite=Strict).
  const attacker = await context.newPage();
  const answers = [];
  // Each request reaches the monitor: its answer is seen (the form's navigation), or arrives
  // and is withheld from the attacker's page by the monitor's Cross-Origin-Resource-Policy.
  attacker.on("response", (r) => { if (r.url().startsWith(monitorUrl)) answers.push(r.status()); });
  attacker.on("requestfailed", (r) => {
    if (r.url().startsWith(monitorUrl)) answers.push(r.failure()?.errorText ?? "failed");
  });
  await attacker.goto(evilUrl);
  await attacker.waitForURL(monitor("/v1/unblock"), { timeout: 10_000 });
  await attacker.close();
  check(answers.length === 3 && answers.every((s) => s === 401 || s === 403 || s === "net::ERR_BLOCKED_BY_RESPONSE.NotSameOrigin"),
    `the cross-site writes were answered ${answers.join(", ")}`);
  // Bad input in the form and the API: a clear message, nothing written.
  await page.fill("#consent-patient", "   ");
  await page.click("#consent-form button[type=submit]");
  await page.waitForSelector("#consent-result.bad");
  const blank = await page.locator("#consent-result").textContent();
  check(/patient: must not be empty/.test(blank), `a blank patient id: ${blank}`);
  const badChoice = await page.evaluate(async (token) => {
    const r = await fetch("/v1/consent", {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify({ patient: "p-2", choice: "maybe", note: "" }),
    });
    return [r.status, (await r.json()).error];
  }, csrf);
  check(badChoice[0] === 400 && /opt-out/.test(badChoice[1]), `a bad choice: ${badChoice}`);
  const after = await auditLength();
  check(after === before, `refused writes logged records: ${before} -> ${after}`);

  // A patient opts out: the review is logged, the consent transaction queued and ordered.
  await page.fill("#consent-patient", "p-1001");
  await page.check("input[name=choice][value=opt-out]");
  await page.fill("#consent-note", "signed form 2026-12-01");
  await page.click("#consent-form button[type=submit]");
  await page.waitForSelector("#consent-result.ok");
  const consentText = await page.locator("#consent-result").textContent();
  const tx = consentText.match(/transaction ([0-9a-f]{64})/)[1];
  check((await auditLength()) === before + 1, "the consent review is one record");
  await axe(page, "the hospital console");
  const consoleStops = await reachableByTab(page, 40);
  for (const want of ["#main", "sign-out", "#alerts", "#consent", "activity-user", "report-patient", "consent-patient", "consent-note", "report-print"]) {
    check(consoleStops.has(want), `Tab never reaches ${want} in the console (reached: ${[...consoleStops].join(", ")})`);
  }
  await page.screenshot({ path: `${shots}/hospital.png`, fullPage: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${shots}/hospital-top.png` });

  // The auditor reads but cannot write, whatever the page would let them try.
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])");
  await page.fill("#token", auditorToken);
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#who:has-text('(auditor)')");
  await page.waitForSelector("#alerts-table tbody tr");
  check(await page.locator("#alerts-table button", { hasText: "Acknowledge" }).count() === 0, "an auditor is offered Acknowledge");
  check(await page.locator("#consent-form").isHidden(), "an auditor is offered the consent form");
  const auditorWrite = await page.evaluate(async () => {
    const s = await fetch("/v1/session").then((r) => r.json());
    const r = await fetch("/v1/consent", {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf },
      body: JSON.stringify({ patient: "p-3", choice: "opt-out", note: "" }),
    });
    return r.status;
  });
  check(auditorWrite === 403, `an auditor's write: ${auditorWrite}`);
  check((await auditLength()) === before + 1, "the auditor's refused write logged a record");

  // The consent transaction appears in the consortium's ledger explorer and verifies there.
  const started = Date.now();
  await page.goto(consortiumUrl);
  await page.waitForFunction(
    (id) => [...document.querySelectorAll("#blocks-table code")].some((c) => c.title === id),
    tx,
    { timeout: 60_000, polling: 500 },
  );
  measured.consent_on_ledger_ms = Date.now() - started;
  const txRow = page.locator("#blocks-table tr", { has: page.locator(`code[title="${tx}"]`) });
  check((await txRow.textContent()).includes("consent"), "the transaction is listed as consent");
  await txRow.locator("button", { hasText: "verify" }).click();
  await page.waitForSelector("#proof-result.ok", { timeout: 10_000 });
  check((await page.locator("#proof-result").textContent()).includes("consent"), "the proof names a consent");
  await page.waitForFunction(() => [...document.querySelectorAll("#members-table tbody tr")]
    .some((r) => r.cells[0].textContent === "h-a" && r.cells[3].textContent === "1"), null, { timeout: 10_000 });
  await page.screenshot({ path: `${shots}/consortium-live.png`, fullPage: true });

  check(problems.length === 0, problems.join("\n"));
  console.log(JSON.stringify(measured));
} finally {
  await browser.close();
  evil.close();
}
