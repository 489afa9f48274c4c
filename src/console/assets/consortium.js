// The consortium page: rounds as they happen, privacy spent against budgets, the ledger
// explorer with in-page proof checks, members and consent. Everything comes from the JSON
// API; every value reaches the page as text (textContent), never as markup.

import { lineChart, stackedBars } from "./charts.js";
import { cell, fixed, utc } from "./dom.js";
import { chainStart, nextHeader, readGenesis, toHex, verifyProof } from "./proof.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const IDLE_POLL_MS = 5000;

const state = {
  rounds: [],
  lastStep: 0,
  height: -1,
  oldestBlock: null,
  genesis: null,
  chain: null,
  chainFailed: false,
  finished: false,
};

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw Object.assign(new Error(body.error ?? response.statusText), { status: response.status });
  return body;
}

// ---- rounds ----------------------------------------------------------------------------

function roundRow(r) {
  const m = r.metrics;
  const tr = document.createElement("tr");
  tr.dataset.step = r.step;
  cell(tr, String(r.step), "num");
  cell(tr, String(m.round), "num");
  if (r.failure) cell(tr, `failed: ${r.failure}`, "failed");
  else cell(tr, r.attempts > 1 ? `anchored after ${r.attempts} attempts` : "anchored", "anchored");
  cell(tr, `${m.participants} of ${m.selected}`, "num");
  cell(tr, m.dropped.concat(m.gone.filter((g) => !m.dropped.includes(g))).join(", ") || "–");
  cell(tr, m.declined.join("; ") || "–");
  cell(tr, m.stage_ms.map(([s, ms]) => `${s} ${ms}`).join(" · "));
  cell(tr, fixed(r.auroc, 3), "num");
  cell(tr, fixed(m.max_epsilon, 3), "num");
  return tr;
}

function drawRounds() {
  const rows = state.rounds;
  lineChart($("auroc-chart"), {
    label: "AUROC of the global model after each round",
    xLabel: "round",
    yLabel: "AUROC",
    series: [{ name: "macro AUROC over hospitals", points: rows.filter((r) => typeof r.auroc === "number").map((r) => [r.metrics.round, r.auroc]) }],
    yMin: 0.5,
    yMax: 1,
  });
  const ranged = rows.filter((r) => r.metrics.range?.norm_bound > 0);
  lineChart($("norm-chart"), {
    label: "Aggregate norm over its honest bound, per round",
    xLabel: "round",
    yLabel: "norm / bound",
    series: [{ name: "norm / bound", points: ranged.map((r) => [r.metrics.round, r.metrics.range.norm / r.metrics.range.norm_bound]) }],
    limits: [{ name: "bound", value: 1 }],
    yMin: 0,
  });
  const recent = rows.slice(-60);
  stackedBars($("stage-chart"), {
    label: "Milliseconds per stage of each round (the last 60 steps)",
    xLabel: "step",
    yLabel: "ms",
    bars: recent.map((r) => ({ x: r.step, parts: r.metrics.stage_ms })),
  });
}

async function refreshRounds() {
  const answer = await api(`/api/v1/rounds?after=${state.lastStep}`);
  if (answer.rounds.length === 0) return;
  const body = $("rounds-table").tBodies[0];
  for (const r of answer.rounds) {
    state.rounds.push(r);
    state.lastStep = Math.max(state.lastStep, r.step);
    body.prepend(roundRow(r));
  }
  drawRounds();
}

// ---- privacy ---------------------------------------------------------------------------

async function refreshPrivacy() {
  const agreements = await api("/api/v1/privacy");
  const body = $("privacy-table").tBodies[0];
  body.replaceChildren();
  const series = [];
  const limits = [];
  for (const a of agreements) {
    limits.push({ name: `budget ${a.budget} (${a.agreement})`, value: a.budget });
    for (const m of a.members) {
      series.push({ name: m.member, points: m.series });
      const tr = document.createElement("tr");
      cell(tr, m.member);
      cell(tr, a.agreement);
      cell(tr, String(m.series.length), "num");
      cell(tr, fixed(m.spent, 3), "num");
      cell(tr, String(a.budget), "num");
      const used = a.budget > 0 ? m.spent / a.budget : 0;
      const td = cell(tr, `${(100 * used).toFixed(1)}% `, "num");
      const meter = document.createElement("span");
      meter.className = used > 1 ? "meter over" : "meter";
      meter.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${Math.min(100, 100 * used)}%`;
      meter.append(fill);
      td.append(meter);
      body.append(tr);
    }
  }
  lineChart($("privacy-chart"), {
    label: "Cumulative employee-level epsilon per hospital after each round, with budgets",
    xLabel: "round",
    yLabel: "ε",
    series,
    limits,
    yMin: 0,
    width: 1200,
  });
}

// ---- ledger ----------------------------------------------------------------------------

function setBadge(text, kind) {
  const badge = $("verified-badge");
  badge.textContent = text;
  badge.className = `badge ${kind}`;
}

/**
 * The genesis the page checks against: the one the server serves, accepted only if it is the
 * one pinned, in the address (`#genesis=HASH`, the hash a member holds; `medfl` prints the
 * link) and in this browser (pinned at the first visit, or from the address). A mismatch is
 * refused; the officer may re-pin, by a button that says what it does.
 */
async function trustedGenesis() {
  if (state.genesis) return state.genesis;
  const genesis = await readGenesis(await api("/api/v1/genesis"));
  const hash = toHex(genesis.hash);
  const key = `medfl.genesis.${location.host}`;
  const params = new URLSearchParams(location.hash.slice(1));
  const stored = localStorage.getItem(key);
  let fromAddress = null;
  if (params.has("genesis")) {
    fromAddress = (params.get("genesis") ?? "").toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(fromAddress)) {
      throw new Error("the address's #genesis= is not a genesis hash (64 hex digits)");
    }
  }
  const offerRepin = (to, why) => {
    const button = $("repin");
    button.textContent = why;
    button.hidden = false;
    button.onclick = () => { localStorage.setItem(key, to); location.reload(); };
  };
  if (fromAddress && fromAddress !== hash) {
    throw new Error(`the server's genesis ${hash} is not the one pinned in the address (${fromAddress})`);
  }
  if (stored && stored !== hash) {
    offerRepin(hash, fromAddress
      ? "Trust the genesis in the address from now on"
      : `Trust the server's new genesis ${hash.slice(0, 12)}… from now on (compare it with yours first)`);
    throw new Error(`the server's genesis ${hash} is not the one this browser pinned (${stored})`);
  }
  let how = stored ? "pinned in this browser" : "pinned in this browser now (first visit): compare it with your genesis (medfl ledger show)";
  if (fromAddress) how = "pinned in the address";
  localStorage.setItem(key, hash);
  $("genesis-hash").textContent = `Genesis ${hash}, ${how}.`;
  state.genesis = genesis;
  return genesis;
}

/** Extends the page's own check of the header chain to the ledger's current height. */
async function extendChain(height) {
  if (state.chainFailed) return;
  try {
    if (!state.chain) state.chain = chainStart(await trustedGenesis());
    while (state.chain.height < height) {
      const page = await api(`/api/v1/headers?from=${state.chain.height + 1}&limit=500`);
      if (page.headers.length === 0) break;
      for (const h of page.headers) state.chain = await nextHeader(state.genesis, state.chain, h);
    }
    setBadge(`verified in this page up to height ${state.chain.height}`, "ok");
  } catch (e) {
    state.chainFailed = true;
    setBadge(`ledger check FAILED: ${e.message}`, "bad");
  }
}

function blockRows(block) {
  const rows = [];
  const txs = block.txs.length ? block.txs : [null];
  txs.forEach((tx, i) => {
    const tr = document.createElement("tr");
    if (i === 0) {
      const span = txs.length;
      for (const [text, cls] of [[String(block.height), "num"], [utc(block.time), ""], [block.proposer, ""]]) {
        const td = cell(tr, text, cls);
        td.rowSpan = span;
      }
    }
    if (!tx) {
      cell(tr, "–");
      cell(tr, "–");
      cell(tr, "no transactions");
      cell(tr, "");
    } else {
      const what = cell(tr, tx.kind);
      const id = document.createElement("code");
      id.className = "hash";
      id.textContent = ` ${tx.id.slice(0, 16)}…`;
      id.title = tx.id;
      what.append(document.createElement("br"), id);
      cell(tr, tx.signer);
      cell(tr, tx.summary);
      const td = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = "verify";
      button.setAttribute("aria-label", `verify the inclusion of transaction ${tx.id.slice(0, 12)} in block ${block.height}`);
      button.addEventListener("click", () => {
        $("tx-id").value = tx.id;
        checkProof(tx.id);
      });
      td.append(button);
      tr.append(td);
    }
    rows.push(tr);
  });
  return rows;
}

async function refreshBlocks(height) {
  const page = await api("/api/v1/blocks?limit=20");
  const body = $("blocks-table").tBodies[0];
  body.replaceChildren(...page.blocks.flatMap(blockRows));
  state.oldestBlock = page.blocks.length ? page.blocks[page.blocks.length - 1].height : null;
  $("older-blocks").hidden = !(state.oldestBlock > 1);
  $("ledger-head").textContent = `Height ${height}. The page checks every block header from the genesis itself; the badge above says how far.`;
}

async function olderBlocks() {
  if (!(state.oldestBlock > 1)) return;
  const page = await api(`/api/v1/blocks?before=${state.oldestBlock}&limit=20`);
  $("blocks-table").tBodies[0].append(...page.blocks.flatMap(blockRows));
  state.oldestBlock = page.blocks.length ? page.blocks[page.blocks.length - 1].height : 1;
  $("older-blocks").hidden = !(state.oldestBlock > 1);
}

async function checkProof(id) {
  const out = $("proof-result");
  out.className = "";
  out.textContent = `checking ${id.slice(0, 12)}…`;
  try {
    if (!/^[0-9a-fA-F]{64}$/.test(id)) throw new Error("a transaction id is 64 hex digits");
    const genesis = await trustedGenesis();
    const proof = await api(`/api/v1/transactions/${id.toLowerCase()}/proof`);
    const p = await verifyProof(genesis, proof);
    if (p.id !== id.toLowerCase()) {
      throw new Error(`the proof is for transaction ${p.id}, not ${id.toLowerCase()}`);
    }
    out.className = "ok";
    out.textContent = `Verified: transaction ${p.id.slice(0, 12)}… (${p.kind}, signed by ${p.signer}${p.signerChecked ? ", signature checked" : ""}) is in block ${p.height} of ${utc(p.time)}, on a chain of ${p.height} signed headers from genesis ${toShort(genesis.hash)}.`;
  } catch (e) {
    out.className = "bad";
    out.textContent = `Not verified: ${e.message}`;
  }
}

function toShort(bytes) {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join("") + "…";
}

// ---- members ---------------------------------------------------------------------------

function drawMembers(ledger) {
  const optedOut = new Map(ledger.consent.map((c) => [c.member, c.opted_out]));
  const members = $("members-table").tBodies[0];
  members.replaceChildren(...ledger.members.map((m) => {
    const tr = document.createElement("tr");
    cell(tr, m.id);
    cell(tr, m.role);
    cell(tr, m.revocation ? `revoked by ${m.revocation.by}: ${m.revocation.reason}` : m.status);
    cell(tr, m.role === "hospital" ? String(optedOut.get(m.id) ?? 0) : "–", "num");
    cell(tr, m.public_key, "hash");
    return tr;
  }));
  const agreements = $("agreements-table").tBodies[0];
  agreements.replaceChildren(...ledger.agreements.map((a) => {
    const tr = document.createElement("tr");
    cell(tr, a.id);
    cell(tr, a.purpose);
    cell(tr, utc(a.expires_at));
    cell(tr, String(a.epsilon_budget), "num");
    cell(tr, String(a.delta), "num");
    cell(tr, a.members.filter((m) => m.accepted).map((m) => m.member).join(", "));
    cell(tr, String(a.last_round), "num");
    return tr;
  }));
}

// ---- the loop --------------------------------------------------------------------------

async function poll() {
  let wait = POLL_MS;
  try {
    const view = await api("/api/v1/consortium");
    const status = view.finished ? "finished" : "running";
    if (view.ledger) {
      $("consortium-name").textContent = view.ledger.consortium;
      document.title = `medfl · ${view.ledger.consortium}`;
    }
    $("run-status").textContent = view.ledger
      ? `Run ${status}: ${view.steps} step${view.steps === 1 ? "" : "s"}, ledger height ${view.ledger.height}`
      : "Run starting: generating the hospitals' data";
    if (view.steps > state.lastStep) await refreshRounds();
    if (view.ledger && view.ledger.height !== state.height) {
      state.height = view.ledger.height;
      drawMembers(view.ledger);
      await Promise.all([refreshBlocks(view.ledger.height), refreshPrivacy()]);
      await extendChain(view.ledger.height);
    }
    state.finished = view.finished;
    if (view.finished) wait = IDLE_POLL_MS;
  } catch (e) {
    $("run-status").textContent = `Cannot reach the run: ${e.message}`;
    wait = IDLE_POLL_MS;
  }
  setTimeout(poll, wait);
}

$("proof-form").addEventListener("submit", (event) => {
  event.preventDefault();
  checkProof($("tx-id").value.trim());
});
$("older-blocks").addEventListener("click", olderBlocks);
poll();
