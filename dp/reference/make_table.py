#!/usr/bin/env python3
"""Writes dp/tests/data/rdp_reference.csv: epsilon from Google's dp-accounting RdpAccountant.

The reference is the PyPI package `dp-accounting`, pinned to exactly version 0.6.0
(DP_ACCOUNTING_VERSION below). The script installs it into a virtual environment under
target/dp-venv (target/ is gitignored) and, for each setting (q, sigma, steps, delta), composes
`SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)` into a fresh
`RdpAccountant()` (default orders, ADD_OR_REMOVE_ONE) and records `get_epsilon(delta)`.

Run from the workspace root:  python3 dp/reference/make_table.py
The Rust test `dp/tests/accountant_reference.rs` asserts medfl matches every row within 1%.
"""

import csv
import os
import subprocess
import sys
import venv

DP_ACCOUNTING_VERSION = "0.6.0"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, "target", "dp-venv")
OUT = os.path.join(ROOT, "dp", "tests", "data", "rdp_reference.csv")

# (q, sigma, steps, delta): q from 1e-3 to 1, sigma 0.5 to 10, steps 1 to 1e5, delta 1e-5..1e-8.
SETTINGS = [
    (0.001, 0.5, 1, 1e-5),
    (0.001, 1.0, 1000, 1e-5),
    (0.001, 1.1, 100000, 1e-5),
    (0.001, 2.0, 10000, 1e-6),
    (0.001, 10.0, 100000, 1e-8),
    (0.004, 0.7, 5000, 1e-6),
    (0.01, 0.5, 100, 1e-5),
    (0.01, 0.8, 10000, 1e-5),
    (0.01, 1.0, 1, 1e-5),
    (0.01, 1.1, 10000, 1e-7),
    (0.01, 1.5, 100000, 1e-8),
    (0.01, 4.0, 50000, 1e-5),
    (0.05, 1.3, 2000, 1e-6),
    (0.05, 3.0, 300, 1e-8),
    (0.1, 0.6, 10, 1e-5),
    (0.1, 1.0, 1000, 1e-5),
    (0.1, 2.5, 100000, 1e-6),
    (0.1, 10.0, 1000, 1e-8),
    (0.25, 1.7, 777, 1e-7),
    (0.5, 0.9, 50, 1e-6),
    (0.5, 5.0, 10000, 1e-5),
    (1.0, 0.5, 1, 1e-5),
    (1.0, 1.0, 10, 1e-5),
    (1.0, 2.0, 100, 1e-6),
    (1.0, 10.0, 100000, 1e-8),
    (1.0, 7.5, 1000, 1e-7),
]


def ensure_venv() -> str:
    """Creates the venv and installs the pinned package if it is not already there."""
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        venv.create(VENV, with_pip=True)
    subprocess.check_call(
        [python, "-m", "pip", "install", "-q", f"dp-accounting=={DP_ACCOUNTING_VERSION}"]
    )
    return python


def compute() -> None:
    """Runs inside the venv: computes every row and writes the CSV."""
    import dp_accounting
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    from importlib.metadata import version

    assert version("dp-accounting") == DP_ACCOUNTING_VERSION, version("dp-accounting")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", newline="") as f:
        f.write(f"# dp-accounting=={DP_ACCOUNTING_VERSION} RdpAccountant(default orders), "
                "SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps).get_epsilon(delta)\n")
        w = csv.writer(f)
        w.writerow(["q", "sigma", "steps", "delta", "epsilon"])
        for q, sigma, steps, delta in SETTINGS:
            acc = rdp.RdpAccountant()
            event = dp_event.SelfComposedDpEvent(
                dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
            )
            acc.compose(event)
            eps = acc.get_epsilon(delta)
            w.writerow([repr(q), repr(sigma), steps, repr(delta), repr(float(eps))])
    _ = dp_accounting
    print(f"wrote {len(SETTINGS)} rows to {OUT}")


def run(script: str, compute_rows) -> None:
    """Re-runs `script` inside the pinned venv, where `compute_rows` does the work."""
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        compute_rows()
    else:
        py = ensure_venv()
        subprocess.check_call([py, os.path.abspath(script), "--inside"])


if __name__ == "__main__":
    run(__file__, compute)
