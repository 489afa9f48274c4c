#!/usr/bin/env python3
"""medfl's SecAgg+ (crate medfl-secagg) side by side with Flower's SecAgg+.

Runs, on the same grid and at the same protocol parameters,

* Flower's peer benchmark ../shared/peers/flower/bench_secaggplus.py, in a
  venv at target/flower-venv (created and filled from the peer's pinned
  requirements.txt on first use), and
* medfl's ``secagg_grid`` example, built with ``cargo --release``,

and prints one Markdown table per configuration:

  flower-default  Flower's example parameters, num_shares=3, threshold=2: each
                  client masks with 2 ring neighbours. medfl: k=2, t=2 (see the
                  note on dropout below).
  full-graph      num_shares=1.0, threshold=0.5 (= Flower's SecAggWorkflow):
                  k=N-1 neighbours, t=round(N/2). medfl: k=N-1, t=round(N/2).
  medfl-default   medfl's default degree k=min(N-1, max(4, 3*ceil(log2 N)))
                  and threshold t=floor(k/2)+1. Flower: num_shares=k+1 (its
                  neighbourhood counts the client itself; rounded down to odd,
                  which Flower requires), threshold=t.

Both sides drop round(f*N) (Flower) / floor(f*N) (medfl; equal on this grid)
clients after the share-keys stage and before the masked input -- the stage
Flower's benchmark drops at -- and both redraw the drop set until the round can
complete (Flower's benchmark policy; medfl's ``--feasible-drops``).

Dropout with k=2, t=2: medfl's shares are held only by a client's
neighbours, Flower's by the neighbourhood *including the client itself*, so
with 2 neighbours and threshold 2 Flower needs one live neighbour to rebuild a
survivor's secret while medfl needs both; medfl at k=2, t=2 cannot complete
any round with a dropout next to a survivor. For the 10 % rows of the
flower-default table medfl therefore runs at the smallest degree that
tolerates it, k=3, t=2 (one more pairwise mask per client than Flower).

Times are reported as wall clock and CPU time (Flower: process CPU, which
includes its Shamir thread pool; medfl: thread CPU, it is single-threaded);
ratios use CPU time, which other load on a shared machine disturbs least.
Client = one surviving client's compute for the whole round (Flower:
mean over survivors; medfl: median over survivors; both include quantizing
the float input); server = the server's compute for the round; both are
medians over --repeats runs. Bytes = what one surviving client uploads
(Flower: payload bytes; medfl: bincode-encoded messages). PRG bound = time
to generate only the mask keystream (AES-256-CTR) medfl's server must
expand; it is a lower bound on medfl's server time.

Finally it runs 100 seeded medfl rounds at N=100, 10 % dropout, each dropped
client going silent at a random stage, with medfl's default parameters, and
reports how many complete (with Flower's figure from its README for contrast).

Usage:
  python3 benches/secagg_vs_flower.py --quick          # N in {10,50}, d in {1e4,1e5}
  python3 benches/secagg_vs_flower.py                  # N in {10,50,100}, d up to 1e6
  python3 benches/secagg_vs_flower.py --n 100 --d 10000 100000 1000000 \\
      --configs flower-default medfl-default
  python3 benches/secagg_vs_flower.py --reuse-flower   # rerun medfl only, against
                                                       # the Flower CSVs of an earlier run
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWER_DIR = (ROOT / ".." / "shared" / "peers" / "flower").resolve()
VENV = ROOT / "target" / "flower-venv"
BITS = 32  # medfl's default ring, and Flower's modulus_range 2^32

CONFIGS = ("flower-default", "full-graph", "medfl-default")

# Flower's README (Dropout section): Monte Carlo estimate of rounds that complete
# at num_shares=3, threshold=2 with 10 % random dropout.
FLOWER_COMPLETION = "~12 % of rounds complete at N=100 (~38 % at N=50), i.e. ~88 % abort"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_degree(n: int) -> int:
    """medfl_secagg::default_degree."""
    if n < 2:
        return 0
    log2 = (n - 1).bit_length()  # ceil(log2 n)
    return min(n - 1, max(4, 3 * log2))


def medfl_params(config: str, n: int, dropout: float) -> tuple[int, int]:
    """(k, t) medfl runs with for this configuration."""
    if config == "flower-default":
        return (3, 2) if dropout > 0 else (2, 2)
    if config == "full-graph":
        return n - 1, round(0.5 * n)
    k = default_degree(n)
    deg = k + 1 if (k % 2 == 1 and n % 2 == 1) else k
    return k, deg // 2 + 1


def flower_params(config: str, n: int) -> tuple[str, str]:
    """(--num-shares, --threshold) for Flower's bench."""
    if config == "flower-default":
        return "3", "2"
    if config == "full-graph":
        return "1.0", "0.5"
    k, t = medfl_params(config, n, 0.0)
    # Flower's ring neighbourhood needs an odd integer num_shares (an even one
    # fails with an IndexError) unless it covers all N clients; round down, so
    # Flower never masks with more neighbours than medfl.
    shares = k + 1 if (k + 1) % 2 == 1 or k + 1 >= n else k
    return str(shares), str(t)


# ----------------------------------------------------------------------------- setup


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_flower_venv() -> None:
    py = venv_python()
    if py.exists():
        ok = subprocess.run([str(py), "-c", "import flwr, numpy"], capture_output=True)
        if ok.returncode == 0:
            return
    log(f"creating {VENV} and installing {FLOWER_DIR / 'requirements.txt'}")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-r", str(FLOWER_DIR / "requirements.txt")],
        check=True,
    )


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build_medfl() -> Path:
    log("building medfl secagg_grid (release)")
    subprocess.run(
        ["cargo", "build", "--release", "-p", "medfl-secagg", "--example", "secagg_grid"],
        cwd=ROOT,
        check=True,
    )
    return target_dir() / "release" / "examples" / "secagg_grid"


# ----------------------------------------------------------------------------- runs


def run_medfl(binary: Path, n: int, d: int, dropout: float, k: int, t: int, repeats: int) -> dict:
    cmd = [
        str(binary), "--n", str(n), "--d", str(d), "--dropout", str(dropout),
        "--k", str(k), "--t", str(t), "--bits", str(BITS), "--repeats", str(repeats),
        "--drop-stage", "masked", "--feasible-drops", "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_flower(
    config: str, ns: list[int], ds: list[int], dropouts: list[float],
    repeats: int, max_seconds: float, out_dir: Path, reuse: bool = False,
) -> dict[tuple[int, int, float], dict]:
    """Runs Flower's bench (or, with reuse, reads an earlier run's CSV); rows keyed by (N, d, dropout)."""
    rows: dict[tuple[int, int, float], dict] = {}
    # medfl-default maps to a per-N num_shares, so it needs one invocation per N.
    groups = [[n] for n in ns] if config == "medfl-default" else [ns]
    for group in groups:
        shares, thr = flower_params(config, group[0])
        out = out_dir / f"flower_{config}_{'-'.join(map(str, group))}.csv"
        cmd = [
            str(venv_python()), str(FLOWER_DIR / "bench_secaggplus.py"),
            "--n", *map(str, group), "--d", *map(str, ds),
            "--dropout", *map(str, dropouts),
            "--num-shares", shares, "--threshold", thr,
            "--repeats", str(repeats), "--max-seconds", str(max_seconds),
            "--out", str(out), "--no-verify",
        ]
        if reuse and out.exists():
            log(f"flower {config}: reusing {out}")
        else:
            log(f"flower {config}: {' '.join(cmd[1:])}")
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=out_dir, stdout=sys.stderr)
            log(f"flower {config} took {time.perf_counter() - t0:.0f}s")
        with open(out, newline="") as fh:
            for row in csv.DictReader(fh):
                key = (int(row["n_clients"]), int(row["d_params"]), float(row["dropout_frac"]))
                rows[key] = row
    return rows


def run_completion(binary: Path, rounds: int) -> dict:
    cmd = [
        str(binary), "--completion-rounds", str(rounds), "--n", "100", "--dropout", "0.1",
        "--d", "1000", "--drop-stage", "random", "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.1f}x"


def wc(wall: float | None, cpu: float | None) -> str:
    if wall is None:
        return "–"
    return f"{fmt_ms(wall)} ({fmt_ms(cpu)})"


def medfl_times(m: dict) -> tuple:
    """(client wall, client cpu, server wall, server cpu, bytes, prg cpu) or Nones."""
    if not m.get("ok"):
        return (None,) * 6
    return (
        m["client_ms"], m["client_cpu_ms"], m["server_ms"], m["server_cpu_ms"],
        m["bytes_per_client"], m["prg_cpu_ms"],
    )


def flower_times(f: dict | None) -> tuple:
    """(client wall, client cpu, server wall, server cpu, bytes) or Nones."""
    if f is None or f.get("note"):
        return (None,) * 5
    return (
        float(f["client_total_s"]) * 1e3, float(f["client_total_cpu_s"]) * 1e3,
        float(f["server_total_s"]) * 1e3, float(f["server_total_cpu_s"]) * 1e3,
        int(f["bytes_total"]),
    )


def table(config: str, results: list[tuple[int, int, float, dict, dict | None]]) -> str:
    lines = [
        f"### {config}",
        "",
        "Times in ms, wall (CPU); ratios on CPU time.",
        "",
        "| N | d | drop | k/t medfl | shares/t Flower | client medfl | client Flower | Flower/medfl "
        "| server medfl | server Flower | Flower/medfl | B/client medfl | B/client Flower "
        "| Flower/medfl | medfl B / (d·b/8) | medfl PRG bound (CPU) | medfl server/PRG |",
        "|" + "---|" * 17,
    ]
    for n, d, drop, m, f in results:
        mcw, mcc, msw, msc, mb, prg = medfl_times(m)
        fcw, fcc, fsw, fsc, fb = flower_times(f)
        note = "" if m.get("ok") else f" (medfl failed: {m.get('error')})"
        if f is None:
            fkt = "not run"
        elif f.get("note"):
            fkt = f["note"]
        else:
            fkt = f"{f['num_shares']}/{f['threshold']}"
        lines.append(
            f"| {n} | {d} | {drop:.0%} | {m.get('k', '?')}/{m.get('t', '?')}{note} | {fkt} "
            f"| {wc(mcw, mcc)} | {wc(fcw, fcc)} | {ratio(fcc, mcc)} "
            f"| {wc(msw, msc)} | {wc(fsw, fsc)} | {ratio(fsc, msc)} "
            f"| {mb if mb is not None else '–'} | {fb if fb is not None else '–'} | {ratio(fb, mb)} "
            f"| {ratio(mb, d * BITS / 8)} | {fmt_ms(prg)} | {ratio(msc, prg)} |"
        )
    return "\n".join(lines)


def goals(all_results: dict[str, list], completion: dict | None) -> str:
    out = ["### Goals", ""]
    client_r, server_r = [], []
    for config in ("flower-default", "full-graph", "medfl-default"):
        for n, d, drop, m, f in all_results.get(config, []):
            mcw, mcc, msw, msc, _, _ = medfl_times(m)
            fcw, fcc, fsw, fsc, _ = flower_times(f)
            if mcc is None or fcc is None:
                continue
            client_r.append((fcc / mcc, fcw / mcw, config, n, d, drop))
            server_r.append((fsc / msc, fsw / msw, config, n, d, drop))
    for name, rs in (("client", client_r), ("server", server_r)):
        if rs:
            lo = min(rs)
            missed = [r for r in rs if r[0] < 3]
            out.append(
                f"- {name} compute, Flower/medfl (CPU) over {len(rs)} rows: min {lo[0]:.1f}x "
                f"({lo[2]} N={lo[3]} d={lo[4]} drop={lo[5]:.0%}; wall {lo[1]:.1f}x), median "
                f"{statistics.median(r[0] for r in rs):.1f}x; goal >= 3x: "
                + ("met" if not missed else f"MISSED in {len(missed)} rows: " + ", ".join(
                    f"{r[2]} N={r[3]} d={r[4]} drop={r[5]:.0%} {r[0]:.1f}x" for r in missed))
            )
    byte_r = [
        (m["bytes_per_client"] / (d * BITS / 8), m["bytes_per_client"] - d * BITS // 8, m["k"], n, d)
        for rs in all_results.values() for n, d, _, m, _ in rs if m.get("ok")
    ]
    if byte_r:
        worst = max(byte_r)
        out.append(
            f"- bytes per client / (d·b/8): max {worst[0]:.3f} (N={worst[3]} d={worst[4]} k={worst[2]}, "
            f"{worst[1]} B beyond d·b/8); overhead per neighbour "
            f"{max(b[1] / max(b[2], 1) for b in byte_r):.0f} B max; goal <= 1.1x + O(k): "
            f"{'met' if all(b[0] <= 1.1 for b in byte_r if b[4] >= 10_000 and b[2] < 20) else 'see rows'}"
        )
    for n, d, drop, m, _ in all_results.get("medfl-default", []):
        if n == 100 and d == 1_000_000 and drop > 0 and m.get("ok"):
            r = m["server_cpu_ms"] / m["prg_cpu_ms"]
            out.append(
                f"- server at N=100, d=1e6, 10 % dropout, defaults: {m['server_cpu_ms']:.0f} ms CPU "
                f"({m['server_ms']:.0f} wall) vs PRG bound {m['prg_cpu_ms']:.0f} ms CPU "
                f"({m['prg_ms']:.0f} wall) = {r:.2f}x; goal <= 2x: {'met' if r <= 2 else 'MISSED'}"
            )
    if completion is not None:
        c = completion
        out.append(
            f"- completion at N={c['n']}, 10 % dropout at random stages, defaults k={c['k']} t={c['t']}: "
            f"{c['completed']}/{c['rounds']} rounds; goal 100/100: "
            f"{'met' if c['completed'] == c['rounds'] else 'MISSED'}. Flower (num_shares=3, "
            f"threshold=2, README): {FLOWER_COMPLETION}."
        )
        for fail in c.get("failures", [])[:10]:
            out.append(f"  - {fail}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N in {10,50}, d in {1e4,1e5}")
    ap.add_argument("--n", type=int, nargs="+")
    ap.add_argument("--d", type=int, nargs="+")
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3, help="runs per row, medians reported")
    ap.add_argument(
        "--flower-repeats", type=int,
        help="Flower runs per row (default: --repeats); fewer lets slow rows fit --max-seconds",
    )
    ap.add_argument(
        "--flower-full-graph-repeats", type=int, default=1,
        help="Flower's full graph takes minutes per run at N=100; 1 repeat as in its README",
    )
    ap.add_argument(
        "--max-seconds", type=float, default=300.0,
        help="Flower skips (writes a 'skipped' row for) a row predicted to take longer",
    )
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument(
        "--reuse-flower", action="store_true",
        help="reuse Flower CSVs already in --out-dir (same configs and N groups) instead of rerunning Flower",
    )
    ap.add_argument("--completion-rounds", type=int, default=100, help="0 to skip")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target" / "secagg-vs-flower")
    args = ap.parse_args()

    ns = args.n or ([10, 50] if args.quick else [10, 50, 100])
    ds = args.d or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    args.out_dir = args.out_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    if not args.skip_flower:
        ensure_flower_venv()
    binary = build_medfl()

    all_results: dict[str, list] = {}
    for config in args.configs:
        flower_rows: dict = {}
        if not args.skip_flower:
            reps = (
                args.flower_full_graph_repeats
                if config == "full-graph"
                else (args.flower_repeats or args.repeats)
            )
            flower_rows = run_flower(
                config, ns, ds, args.dropout, reps, args.max_seconds, args.out_dir,
                args.reuse_flower,
            )
        results = []
        for n in ns:
            for d in ds:
                for drop in args.dropout:
                    k, t = medfl_params(config, n, drop)
                    log(f"medfl {config}: N={n} d={d} drop={drop} k={k} t={t}")
                    try:
                        m = run_medfl(binary, n, d, drop, k, t, args.repeats)
                    except subprocess.CalledProcessError as e:
                        m = {"ok": False, "error": (e.stderr or "").strip()[-200:], "k": k, "t": t}
                    results.append((n, d, drop, m, flower_rows.get((n, d, drop))))
        all_results[config] = results
        print(table(config, results) + "\n", flush=True)

    completion = None
    if args.completion_rounds > 0:
        log(f"medfl completion rate over {args.completion_rounds} rounds")
        completion = run_completion(binary, args.completion_rounds)
        print(
            f"### Completion\n\nmedfl, N=100, 10 % of clients dropping at a random stage each round, "
            f"default k={completion['k']}, t={completion['t']}: "
            f"**{completion['completed']}/{completion['rounds']}** rounds completed with the exact sum.\n"
            f"Flower (num_shares=3, threshold=2), from its README: {FLOWER_COMPLETION}.\n",
            flush=True,
        )
    print(goals(all_results, completion), flush=True)
    with open(args.out_dir / "results.json", "w") as fh:
        json.dump(
            {c: [{"n": n, "d": d, "dropout": dr, "medfl": m, "flower": f} for n, d, dr, m, f in rs]
             for c, rs in all_results.items()} | {"completion": completion},
            fh, indent=1,
        )


if __name__ == "__main__":
    main()
