// The hospital console: a security officer's live alerts, blocks, reports, consent and
// privacy, over the monitor's own API. The session cookie is HttpOnly (this script never sees
// it); writes carry the session's CSRF token. The server checks every permission: this page
// only hides what the signed-in role may not do. Every value reaches the page as text.

import { cell, fixed, utc } from "./dom.js";

const $ = (id) => document.getElementById(id);
const session = { csrf: null, role: null, officer: null };
let stream = null;

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // Every request carries the CSRF token: some reads (the reports) write a record too.
  if (session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const why = answer.error ?? `${response.status} ${response.statusText}`;
    throw Object.assign(new Error(why), { status: response.status });
  }
  return answer;
}

function say(id, text, ok) {
  const out = $(id);
  out.textContent = text;
  out.className = ok === undefined ? "" : ok ? "ok" : "bad";
}

// ---- signing in and out ----------------------------------------------------------------

function showSignedIn(view) {
  session.csrf = view.csrf;
  session.role = view.role;
  session.officer = view.officer;
  $("who").textContent = `Signed in as ${view.officer} (${view.role}) until ${utc(view.expires_ms)}`;
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  document.body.dataset.role = view.role;
  $("consent-form").hidden = view.role !== "officer";
  start();
}

function showSignedOut(message) {
  session.csrf = null;
  if (stream) { stream.close(); stream = null; }
  $("who").textContent = "Not signed in";
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  if (message) say("sign-in-result", message, false);
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("sign-in-result", "");
  try {
    const view = await api("POST", "/v1/session", { token: $("token").value.trim() });
    $("token").value = "";
    showSignedIn(view);
  } catch (e) {
    say("sign-in-result", `Not signed in: ${e.message}`, false);
  }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/v1/session"); } catch { /* the session is gone either way */ }
  showSignedOut("Signed out.");
});

// ---- alerts ----------------------------------------------------------------------------

const alertRows = new Map();

function reviewCell(tr, alert) {
  const td = document.createElement("td");
  if (alert.acknowledged_by) {
    td.textContent = `acknowledged by ${alert.acknowledged_by}`;
  } else if (session.role === "officer") {
    const form = document.createElement("form");
    form.className = "inline";
    const label = document.createElement("label");
    label.textContent = "Note";
    const note = document.createElement("input");
    note.type = "text";
    note.maxLength = 1000;
    note.id = `ack-note-${alert.seq}`;
    label.htmlFor = note.id;
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Acknowledge";
    button.setAttribute("aria-label", `acknowledge alert ${alert.seq} on ${alert.user}`);
    form.append(label, note, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const r = await api("POST", `/v1/alerts/${alert.seq}/ack`, { note: note.value });
        say("action-result", `Alert ${alert.seq} acknowledged (review record ${r.record}).`, true);
        alert.acknowledged_by = session.officer;
        td.replaceChildren(`acknowledged by ${session.officer}`);
      } catch (e) {
        say("action-result", `Alert ${alert.seq} not acknowledged: ${e.message}`, false);
      }
    });
    td.append(form);
  } else {
    td.textContent = "open";
  }
  tr.append(td);
}

/** Why an alert adds nothing to its case's evidence (`standing`; `unexplained` adds it). */
const STANDING = {
  care_team: "explained by the care team: no case evidence",
  break_glass: "break-the-glass: reviewed on its own, no case evidence",
};

function alertRow(a) {
  const tr = document.createElement("tr");
  tr.dataset.record = a.seq;
  cell(tr, String(a.seq), "num");
  cell(tr, utc(a.time_ms));
  cell(tr, a.user);
  cell(tr, a.patient);
  cell(tr, a.verdict, a.verdict === "deny" ? "failed" : "");
  cell(tr, a.score == null ? "rule" : `${fixed(a.score, 3)} / ${fixed(a.threshold, 3)}`, "num");
  cell(tr, [a.explanation, ...a.reasons, STANDING[a.standing]].filter(Boolean).join(" — "));
  reviewCell(tr, a);
  return tr;
}

function addAlert(a, atTop) {
  const old = alertRows.get(a.seq);
  const tr = alertRow(a);
  if (old) old.replaceWith(tr);
  else if (atTop) $("alerts-table").tBodies[0].prepend(tr);
  else $("alerts-table").tBodies[0].append(tr);
  alertRows.set(a.seq, tr);
}

async function loadAlerts() {
  const answer = await api("GET", "/v1/alerts");
  $("alerts-table").tBodies[0].replaceChildren();
  alertRows.clear();
  for (const a of answer.alerts) addAlert(a, false);
}

function listen() {
  if (stream) stream.close();
  stream = new EventSource("/v1/alerts/stream");
  stream.addEventListener("open", () => say("stream-status", "Live: new alerts appear here as they are decided."));
  stream.addEventListener("alert", (event) => {
    addAlert(JSON.parse(event.data), true);
    refreshBlocked();
    refreshCasesSoon();
  });
  stream.addEventListener("acknowledged", (event) => {
    const review = JSON.parse(event.data);
    const tr = alertRows.get(review.alert);
    if (tr) tr.lastElementChild.replaceChildren(`acknowledged by ${review.officer}`);
    refreshCasesSoon();
  });
  stream.addEventListener("unblocked", () => refreshBlocked());
  stream.addEventListener("error", () => {
    say("stream-status", "The live stream was interrupted; reconnecting…");
    // EventSource reconnects by itself; a closed session would loop, so check it.
    api("GET", "/v1/session").catch(() => showSignedOut("The session ended: sign in again."));
  });
}

// ---- cases -----------------------------------------------------------------------------

/** A message row spanning a table's columns. */
function only(body, text, columns) {
  const tr = document.createElement("tr");
  cell(tr, text).colSpan = columns;
  body.replaceChildren(tr);
}

async function refreshCases() {
  const view = await api("GET", "/v1/cases");
  const ranked = view.cases.filter((c) => c.rank != null);
  const budget = view.budget == null
    ? "no staff directory is loaded, so no daily budget"
    : `the office reviews the first ${view.budget} of each day`;
  $("cases-summary").textContent = `${ranked.length} cases with evidence over the last ${view.days} days; ${budget}.`;
  const body = $("cases-table").tBodies[0];
  if (ranked.length === 0) only(body, "No case has evidence.", 7);
  else body.replaceChildren(...ranked.map((c) => {
    const tr = document.createElement("tr");
    cell(tr, c.day);
    cell(tr, String(c.rank), "num");
    cell(tr, c.user);
    cell(tr, `${fixed(c.evidence + c.carried, 2)} (${fixed(c.evidence, 2)} + ${fixed(c.carried, 2)})`, "num");
    cell(tr, String(c.model_alerts), "num");
    cell(tr, String(c.open), "num");
    cell(tr, c.reviewed ? "within the day's budget" : "below the budget");
    return tr;
  }));
  noted("break-glass-table", view.break_glass, "No emergency was declared.");
  noted("role-policy-table", view.role_policy, "No access broke the role policy.");
}

// A queue of user-days whose accesses are each reviewed on their own. An officer acknowledges
// them here oldest first, whether or not their alerts are still in the list above.
function noted(table, days, none) {
  const body = $(table).tBodies[0];
  if (days.length === 0) only(body, none, 5);
  else body.replaceChildren(...days.map((e) => {
    const tr = document.createElement("tr");
    cell(tr, e.day);
    cell(tr, e.user);
    const more = e.unheld > 0 ? ` (${e.unheld} past the first 1,000: review the user's activity)` : "";
    cell(tr, `${e.accesses}${more}`, "num");
    cell(tr, String(e.open), "num");
    notedReviewCell(tr, e);
    return tr;
  }));
}

function notedReviewCell(tr, day) {
  const td = document.createElement("td");
  const record = day.open_records[0];
  if (record == null) {
    td.textContent = "all acknowledged";
  } else if (session.role === "officer") {
    const form = document.createElement("form");
    form.className = "inline";
    const label = document.createElement("label");
    label.textContent = "Note";
    const note = document.createElement("input");
    note.type = "text";
    note.maxLength = 1000;
    note.id = `noted-note-${record}`;
    label.htmlFor = note.id;
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Acknowledge";
    button.setAttribute("aria-label", `acknowledge record ${record}, ${day.user}'s oldest open access of ${day.day}`);
    form.append(label, note, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const r = await api("POST", `/v1/alerts/${record}/ack`, { note: note.value });
        say("action-result", `Record ${record} acknowledged (review record ${r.record}).`, true);
      } catch (e) {
        say("action-result", `Record ${record} not acknowledged: ${e.message}`, false);
      }
      refreshCasesSoon();
    });
    td.append(form);
  } else {
    td.textContent = "an officer acknowledges each";
  }
  tr.append(td);
}

// An alert or a review changes the queues: refresh them once for a burst of either.
let casesDue = null;
function refreshCasesSoon() {
  if (casesDue) return;
  casesDue = setTimeout(() => {
    casesDue = null;
    refreshCases().catch((e) => say("cases-summary", `Cases: ${e.message}`, false));
  }, 300);
}

// ---- blocked users ---------------------------------------------------------------------

async function refreshBlocked() {
  const answer = await api("GET", "/v1/blocked");
  const body = $("blocked-table").tBodies[0];
  if (answer.blocked.length === 0) {
    only(body, "No user is blocked.", 4);
    return;
  }
  body.replaceChildren(...answer.blocked.map((b) => {
    const tr = document.createElement("tr");
    cell(tr, b.user);
    cell(tr, utc(b.since_ms));
    cell(tr, b.reason);
    const td = document.createElement("td");
    if (session.role === "officer") {
      const form = document.createElement("form");
      form.className = "inline";
      const note = document.createElement("input");
      note.type = "text";
      note.maxLength = 1000;
      note.setAttribute("aria-label", `why ${b.user}'s block is lifted`);
      const button = document.createElement("button");
      button.type = "submit";
      button.textContent = "Unblock";
      button.setAttribute("aria-label", `unblock ${b.user}`);
      form.append(note, button);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          const r = await api("POST", "/v1/unblock", { user: b.user, note: note.value });
          say("action-result", `${b.user} unblocked (review record ${r.record}).`, true);
          refreshBlocked();
        } catch (e) {
          say("action-result", `${b.user} still blocked: ${e.message}`, false);
        }
      });
      td.append(form);
    } else {
      td.textContent = "an officer may lift it";
    }
    tr.append(td);
    return tr;
  }));
}

// ---- reports ---------------------------------------------------------------------------

function accessRow(entry, whoColumn) {
  const { request: r, decision: d } = entry;
  const tr = document.createElement("tr");
  cell(tr, String(entry.record), "num");
  cell(tr, utc(r.time_ms));
  cell(tr, whoColumn(r));
  cell(tr, `${r.action} ${r.resource}${r.break_glass ? " (break-the-glass)" : ""}`);
  cell(tr, `${r.source_ip} / ${r.workstation}`);
  cell(tr, d.verdict, d.verdict === "deny" ? "failed" : "");
  return tr;
}

$("activity-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("activity-user").value.trim();
  try {
    const answer = await api("GET", `/v1/users/${encodeURIComponent(user)}/activity`);
    $("activity-caption").textContent = `${user}'s latest ${answer.accesses.length} accesses, newest first`;
    $("activity-table").tBodies[0].replaceChildren(...answer.accesses.map((e) => accessRow(e, (r) => r.patient)));
    $("activity-table").hidden = false;
    say("activity-result", answer.accesses.length ? "" : `No access by ${user} among the latest ${answer.window} records.`);
  } catch (e) {
    say("activity-result", `Cannot show ${user}'s activity: ${e.message}`, false);
  }
});

$("report-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const patient = $("report-patient").value.trim();
  try {
    const answer = await api("GET", `/v1/patients/${encodeURIComponent(patient)}/accesses`);
    $("report-caption").textContent = `Who accessed the record of patient ${patient}: ${answer.total} accesses, oldest first`;
    $("report-table").tBodies[0].replaceChildren(...answer.accesses.map((e) => accessRow(e, (r) => `${r.user} (${r.role}, ${r.department})`)));
    $("report-table").hidden = false;
    $("report-print").hidden = false;
    say("report-result", answer.total ? "" : `No access to patient ${patient}'s record is logged.`);
  } catch (e) {
    say("report-result", `Cannot show the report: ${e.message}`, false);
  }
});
$("report-print").addEventListener("click", () => window.print());

// ---- consent ---------------------------------------------------------------------------

$("consent-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData($("consent-form"));
  const patient = String(form.get("patient")).trim();
  const choice = String(form.get("choice"));
  try {
    const r = await api("POST", "/v1/consent", { patient, choice, note: String(form.get("note") ?? "") });
    say("consent-result", `Recorded: patient ${patient} ${choice === "opt-out" ? "opts out" : "opts in"} (review record ${r.record}); consent transaction ${r.transaction} queued for the ledger.`, true);
  } catch (e) {
    say("consent-result", `Not recorded: ${e.message}`, false);
  }
});

// ---- privacy ---------------------------------------------------------------------------

async function refreshPrivacy() {
  try {
    const view = await api("GET", "/v1/privacy");
    $("privacy-caption").textContent = `Employee-level ε ${view.member} has spent under each agreement, from its own ledger copy at height ${view.height}`;
    $("privacy-table").tBodies[0].replaceChildren(...view.agreements.map((a) => {
      const tr = document.createElement("tr");
      cell(tr, a.agreement);
      cell(tr, String(a.rounds_joined), "num");
      cell(tr, fixed(a.spent, 3), "num");
      cell(tr, String(a.budget), "num");
      cell(tr, a.budget > 0 ? `${(100 * a.spent / a.budget).toFixed(1)}%` : "–", "num");
      cell(tr, a.after_next_round == null ? "no round yet" : `${fixed(a.after_next_round, 3)} (+${fixed(a.after_next_round - a.spent, 3)})`, "num");
      return tr;
    }));
  } catch (e) {
    $("privacy-caption").textContent = `Privacy: ${e.message}`;
  }
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  try {
    await loadAlerts();
    listen();
    await Promise.all([refreshBlocked(), refreshCases(), refreshPrivacy()]);
  } catch (e) {
    if (e.status === 401) showSignedOut("The session ended: sign in again.");
    else say("action-result", e.message, false);
  }
}

setInterval(() => { if (session.csrf) refreshPrivacy(); }, 5000);

api("GET", "/v1/session").then(showSignedIn, () => showSignedOut());
