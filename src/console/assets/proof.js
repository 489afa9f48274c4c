// The ledger's checks, done by the browser itself: the genesis hash from its canonical bytes,
// the chain of signed block headers from it, and a transaction's inclusion proof. The same
// rules as medfl_ledger::proof::InclusionProof::verify, with the browser's WebCrypto
// (SHA-256, Ed25519) so that the page does not take the server's word for any of it.
//
// The byte layouts are the ledger's canonical encoding (medfl_ledger::codec): bincode,
// little-endian, fixed-width integers; a string or list is a u64 length then its items; a
// hash, key or signature is its raw bytes; an enum is its u32 variant index then its fields.

const utf8 = new TextEncoder();

/** Bytes from lowercase or uppercase hex; throws on anything else. */
export function fromHex(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("not hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function uint(value, bytes) {
  // Heights, counts and millisecond times are far below 2^53; BigInt keeps u64 exact anyway.
  let v = BigInt(value);
  if (v < 0n || v >= 1n << BigInt(8 * bytes)) throw new Error(`${value} does not fit ${bytes} bytes`);
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
}

function str(s) {
  const b = utf8.encode(s);
  return concat(uint(b.length, 8), b);
}

function hash32(hex, what) {
  const b = fromHex(hex);
  if (b.length !== 32) throw new Error(`${what} is not 32 bytes`);
  return b;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** medfl's tagged hash: SHA-256 of the tag's u64 length, the tag, then the parts. */
async function tagged(tag, ...parts) {
  const t = utf8.encode(tag);
  return sha256(concat(uint(t.length, 8), t, ...parts));
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Reads canonical bytes front to back, refusing to run past the end. */
class Reader {
  constructor(bytes) { this.bytes = bytes; this.at = 0; }
  take(n) {
    if (n > this.bytes.length - this.at) throw new Error("the bytes end early");
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u32() { const b = this.take(4); return b[0] + b[1] * 2 ** 8 + b[2] * 2 ** 16 + b[3] * 2 ** 24; }
  u64() {
    const lo = this.u32();
    const hi = this.u32();
    if (hi >= 2 ** 21) throw new Error("a length or time beyond 2^53");
    return hi * 2 ** 32 + lo;
  }
  string() { return new TextDecoder("utf-8", { fatal: true }).decode(this.take(this.u64())); }
}

const ROLES = ["coordinator", "hospital", "auditor"];
const TX_KINDS = [
  "add-member", "revoke-member", "register-agreement", "accept-agreement", "consent",
  "anchor-round", "anchor-audit-log", "anchor-alert", "extend-agreement", "accept-terms",
];

async function ed25519Key(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
}

async function signedBy(key, signature, message) {
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

/**
 * The genesis as the page knows it, from the server's `/api/v1/genesis`: its hash computed
 * here from the canonical bytes (the server's stated hash must agree), the founding time and
 * every founding member's key read from the same bytes.
 */
export async function readGenesis(view) {
  if (!crypto || !crypto.subtle) {
    throw new Error("this browser offers no WebCrypto here (it needs HTTPS or localhost)");
  }
  const bytes = fromHex(view.canonical);
  const hash = await tagged("medfl/genesis/v1", bytes);
  if (toHex(hash) !== view.hash) {
    throw new Error("the genesis bytes do not hash to the genesis hash the server states");
  }
  const r = new Reader(bytes);
  const name = r.string();
  const createdAt = r.u64();
  r.u32(); // quorum
  const count = r.u64();
  const members = new Map();
  for (let i = 0; i < count; i++) {
    const id = r.string();
    const roleIndex = r.u32();
    const role = ROLES[roleIndex];
    if (!role) throw new Error(`member ${id}: unknown role ${roleIndex}`);
    const key = await ed25519Key(r.take(32));
    r.string(); // address
    members.set(id, { role, key });
  }
  return { name, hash, createdAt, members };
}

function headerBytes(h) {
  if (!Number.isSafeInteger(h.height) || !Number.isSafeInteger(h.timestamp)) {
    throw new Error("a header's height or time is not an integer");
  }
  return concat(
    uint(h.version, 2), uint(h.height, 8), hash32(h.previous, "previous"),
    hash32(h.tx_root, "tx_root"), uint(h.tx_count, 4), uint(h.timestamp, 8), str(h.proposer),
  );
}

/** The start of a chain: nothing checked yet but the genesis. */
export function chainStart(genesis) {
  return { height: 0, previous: genesis.hash, time: genesis.createdAt };
}

/**
 * Checks `signed` (a SignedHeader as the API gives it) as the next header after `at`:
 * height, link, time and the proposing coordinator's signature. Returns the chain's new
 * end, or throws why not.
 */
export async function nextHeader(genesis, at, signed) {
  const h = signed.header;
  const where = `header at height ${h.height}`;
  if (h.height !== at.height + 1) throw new Error(`${where}: expected height ${at.height + 1}`);
  if (h.version !== 1) throw new Error(`${where}: unknown version ${h.version}`);
  if (h.previous !== toHex(at.previous)) throw new Error(`${where}: does not link to the header before it`);
  if (h.timestamp < at.time) throw new Error(`${where}: time goes backwards`);
  const proposer = genesis.members.get(h.proposer);
  if (!proposer || proposer.role !== "coordinator") {
    throw new Error(`${where}: proposer ${h.proposer} is not a founding coordinator`);
  }
  const bytes = headerBytes(h);
  const signature = fromHex(signed.signature);
  if (signature.length !== 64) throw new Error(`${where}: the signature is not 64 bytes`);
  const message = concat(utf8.encode("medfl/header/v1"), genesis.hash, bytes);
  if (!(await signedBy(proposer.key, signature, message))) {
    throw new Error(`${where}: the proposer's signature does not verify`);
  }
  return {
    height: h.height,
    previous: await tagged("medfl/block/v1", bytes, signature),
    time: h.timestamp,
    txRoot: hash32(h.tx_root, "tx_root"),
    txCount: h.tx_count,
  };
}

async function leafHash(leaf) { return sha256(concat(new Uint8Array([0]), leaf)); }
async function nodeHash(l, r) { return sha256(concat(new Uint8Array([1]), l, r)); }

/** The root a Merkle path (RFC 6962, section 2.1.1) leads to from `leaf`, or null. */
async function rootFrom(path, leaf) {
  let fn = BigInt(path.index);
  let sn = BigInt(path.leaf_count) - 1n;
  if (fn > sn) return null;
  let r = await leafHash(leaf);
  for (const siblingHex of path.siblings) {
    const p = hash32(siblingHex, "a Merkle sibling");
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

/**
 * Checks an inclusion proof against the genesis alone; returns what it establishes (id,
 * kind, signer, height, whether the signer's own signature was checked) or throws why not.
 */
export async function verifyProof(genesis, proof) {
  if (proof.genesis !== toHex(genesis.hash)) throw new Error("the proof is for another genesis");
  if (!Array.isArray(proof.headers) || proof.headers.length === 0) {
    throw new Error("the proof carries no block header");
  }
  let at = chainStart(genesis);
  for (const signed of proof.headers) at = await nextHeader(genesis, at, signed);
  const tx = fromHex(proof.tx);
  const id = await tagged("medfl/tx-id/v1", tx);
  const root = await rootFrom(proof.path, id);
  if (proof.path.leaf_count !== at.txCount || root === null || !equal(root, at.txRoot)) {
    throw new Error(`the Merkle path does not lead to the transaction root of block ${at.height}`);
  }
  const r = new Reader(tx);
  const signer = r.string();
  r.u64(); // issued_at
  const kind = TX_KINDS[r.u32()] ?? "unknown";
  if (tx.length < 64) throw new Error("the transaction is too short to be signed");
  const member = genesis.members.get(signer);
  let signerChecked = false;
  if (member) {
    const message = concat(utf8.encode("medfl/tx/v1"), genesis.hash, tx.subarray(0, tx.length - 64));
    if (!(await signedBy(member.key, tx.subarray(tx.length - 64), message))) {
      throw new Error(`the transaction's signature by ${signer} does not verify`);
    }
    signerChecked = true;
  }
  return { id: toHex(id), kind, signer, height: at.height, time: at.time, signerChecked };
}
