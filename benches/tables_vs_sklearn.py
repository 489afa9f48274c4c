#!/usr/bin/env python3
"""medfl's federated model on public anomaly-detection tables, beside scikit-learn.

Each data set is cut into five non-IID hospitals (k-means clusters dealt out with Dirichlet
proportions, so hospitals differ in what their normal rows look like and in how many they
have), each hospital's rows get a seeded train/validation/test split column, and then:

- `medfl experiment --tables` runs local, federated, centralized, isolation forest and ensemble
  over the five hospital files (the split column keeps every side on the same rows);
- scikit-learn's IsolationForest (defaults) is fitted centrally on all hospitals' training rows
  pooled and scores each hospital's test rows, in this script.

Both are judged the same way: AUROC on each hospital's test rows, averaged over the hospitals
whose test rows hold both classes. Figures are medians over seeds.

The data sets ship with scikit-learn (no download), made into anomaly tables as the ODDS
collection does (a minority class subsampled as the anomalies):
- wdbc: breast-cancer diagnostics, benign normal, malignant subsampled to 10%;
- wine: classes 1 and 2 normal, 10 rows of class 0 the anomalies (ODDS "wine");
- digits: the digits 1-9 normal, the digit 0 subsampled to 3% (as ODDS "optdigits").

Usage: python3 benches/tables_vs_sklearn.py [--medfl target/release/medfl] [--seeds 0 1 2]
Needs scikit-learn (`pip install scikit-learn`); the README says how to get it in a venv.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

HOSPITALS = 5
SETTINGS = ["local", "federated", "centralized", "isolation forest", "federated forest", "ensemble"]


def anomaly_table(name, rng):
    """(X, y) with y = 1 for the anomalies."""
    if name == "wdbc":
        d = load_breast_cancer()
        normal, anomalous = d.data[d.target == 1], d.data[d.target == 0]
        k = round(len(normal) / 9)
    elif name == "wine":
        d = load_wine()
        normal, anomalous = d.data[d.target != 0], d.data[d.target == 0]
        k = 10
    elif name == "digits":
        d = load_digits()
        normal, anomalous = d.data[d.target != 0], d.data[d.target == 0]
        k = round(0.03 * len(normal) / 0.97)
    else:
        raise ValueError(name)
    anomalous = anomalous[rng.choice(len(anomalous), size=k, replace=False)]
    x = np.vstack([normal, anomalous])
    y = np.concatenate([np.zeros(len(normal), dtype=int), np.ones(k, dtype=int)])
    return x, y


def non_iid_hospitals(x, rng, seed, alpha=0.5, min_rows=12):
    """A hospital index per row: k-means clusters dealt out by Dirichlet(alpha) shares."""
    clusters = KMeans(n_clusters=HOSPITALS, n_init=10, random_state=seed).fit_predict(
        StandardScaler().fit_transform(x)
    )
    for _ in range(1000):
        owner = np.empty(len(x), dtype=int)
        for c in range(HOSPITALS):
            rows = rng.permutation(np.flatnonzero(clusters == c))
            shares = rng.dirichlet([alpha] * HOSPITALS)
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for h, part in enumerate(np.split(rows, cuts)):
                owner[part] = h
        if np.bincount(owner, minlength=HOSPITALS).min() >= min_rows:
            return owner
    raise RuntimeError("no deal gave every hospital enough rows")


def split_column(n, y, rng):
    """60/20/20 train/validation/test, redrawn until validation has a normal row and test a row."""
    for _ in range(1000):
        part = np.array(["train"] * n, dtype=object)
        order = rng.permutation(n)
        part[order[int(n * 0.6) : int(n * 0.8)]] = "validation"
        part[order[int(n * 0.8) :]] = "test"
        if ((part == "validation") & (y == 0)).any() and (part == "test").any():
            return part
    raise RuntimeError("no split fits")


def macro_auroc(scores_of, tests):
    values = []
    for x_test, y_test in tests:
        if 0 < y_test.sum() < len(y_test):
            values.append(roc_auc_score(y_test, scores_of(x_test)))
    return sum(values) / len(values) if values else float("nan")


def run_one(medfl, name, seed, workdir):
    rng = np.random.default_rng(seed)
    x, y = anomaly_table(name, rng)
    owner = non_iid_hospitals(x, rng, seed)
    files, pooled_train, tests, sizes = [], [], [], []
    for h in range(HOSPITALS):
        xh, yh = x[owner == h], y[owner == h]
        part = split_column(len(xh), yh, rng)
        path = os.path.join(workdir, f"{name}-{seed}-h{h}.csv")
        with open(path, "w") as f:
            f.write(",".join([f"f{j}" for j in range(x.shape[1])] + ["part", "label"]) + "\n")
            for row, p, label in zip(xh, part, yh):
                f.write(",".join(repr(float(v)) for v in row) + f",{p},{label}\n")
        files.append(path)
        pooled_train.append(xh[part == "train"])
        tests.append((xh[part == "test"], yh[part == "test"]))
        sizes.append(len(xh))
    out = os.path.join(workdir, f"{name}-{seed}.json")
    started = time.monotonic()
    subprocess.run(
        [medfl, "experiment", "--tables", *files, "--label-column", "label",
         "--split-column", "part", "--seed", str(seed), "--json", out],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    medfl_s = time.monotonic() - started
    with open(out) as f:
        results = json.load(f)
    figures = {}
    for r in results:
        aurocs = [e["auroc"] for _, e in r["hospitals"] if e["auroc"] is not None]
        figures[r["setting"]] = sum(aurocs) / len(aurocs) if aurocs else float("nan")
    started = time.monotonic()
    forest = IsolationForest(random_state=seed).fit(np.vstack(pooled_train))
    figures["sklearn"] = macro_auroc(lambda t: -forest.score_samples(t), tests)
    sklearn_s = time.monotonic() - started
    return figures, sizes, x.shape, medfl_s, sklearn_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--medfl", default="target/release/medfl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["wdbc", "wine", "digits"])
    ap.add_argument("--json", help="also write every figure here")
    args = ap.parse_args()
    rows, everything = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.datasets:
            runs = []
            for seed in args.seeds:
                print(f"{name}, seed {seed} ...", file=sys.stderr, flush=True)
                runs.append(run_one(args.medfl, name, seed, workdir))
            # A seed whose hospitals' test rows never hold both classes has no AUROC to give.
            judged = [r for r in runs if not math.isnan(r[0]["sklearn"])]
            if not judged:
                print(f"{name}: no seed gave a hospital test rows of both classes", file=sys.stderr)
                continue
            med = {k: statistics.median(r[0][k] for r in judged) for k in SETTINGS + ["sklearn"]}
            gap = lambda k: statistics.median(r[0][k] - r[0]["sklearn"] for r in judged)
            shape = runs[0][2]
            smallest = min(min(r[1]) for r in runs)
            everything[name] = [
                {"seed": s, "figures": r[0], "hospital_rows": r[1], "medfl_s": r[3], "sklearn_s": r[4]}
                for s, r in zip(args.seeds, runs)
            ]
            rows.append([
                f"{name} ({len(judged)} seeds)", f"{shape[0]}x{shape[1]}", str(smallest), f"{med['sklearn']:.3f}",
                f"{med['federated forest']:.3f} ({gap('federated forest'):+.3f})",
                f"{med['ensemble']:.3f} ({gap('ensemble'):+.3f})",
                f"{med['federated']:.3f} ({gap('federated'):+.3f})",
                f"{med['centralized']:.3f}", f"{med['local']:.3f}",
                f"{med['isolation forest']:.3f}",
                f"{statistics.median(r[3] for r in runs):.1f}",
            ])
    head = ["table", "rows x cols", "smallest hospital", "sklearn IF, central",
            "federated forest (gap)", "ensemble (gap)", "federated autoencoder (gap)",
            "centralized autoencoder", "local autoencoder", "own forest", "medfl s"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(f"AUROC, macro average over {HOSPITALS} non-IID hospitals' test rows; "
          f"median over seeds {args.seeds}")
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=2)


if __name__ == "__main__":
    main()
