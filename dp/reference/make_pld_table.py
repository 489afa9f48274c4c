#!/usr/bin/env python3
"""Writes dp/tests/data/pld_reference.csv: epsilon from Google's dp-accounting PLDAccountant.

The reference is the PyPI package `dp-accounting`, pinned to exactly version 0.6.0 (the same
virtual environment as make_table.py: target/dp-venv, installed on first use). For each setting
(q, sigma, steps, delta) it composes
`SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)` into a fresh
`PLDAccountant()` (ADD_OR_REMOVE_ONE, value_discretization_interval 1e-4, connect-the-dots) and
records `get_epsilon(delta)`, with the RdpAccountant's figure beside it to show what PLD saves.

Run from the workspace root:  python3 dp/reference/make_pld_table.py
The Rust test `dp/tests/pld_reference.rs` asserts medfl's PLD matches every row within 1%.
"""

import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_table import DP_ACCOUNTING_VERSION, ROOT, run  # noqa: E402

OUT = os.path.join(ROOT, "dp", "tests", "data", "pld_reference.csv")

# (q, sigma, steps, delta): medfl's defaults (q 0.01, 100 steps a round, 1..50 rounds) and the
# corners around them; q 1e-3..1, sigma 0.6..8, steps 1..20000, delta 1e-5..1e-9.
SETTINGS = [
    (0.01, 1.0, 100, 1e-6),
    (0.01, 1.0, 1000, 1e-6),
    (0.01, 1.0, 5000, 1e-6),
    (0.01, 0.8, 1000, 1e-6),
    (0.01, 1.5, 2000, 1e-7),
    (0.01, 0.6, 500, 1e-5),
    (0.01, 3.0, 10000, 1e-6),
    (0.001, 1.0, 10000, 1e-6),
    (0.001, 0.7, 20000, 1e-8),
    (0.004, 1.2, 5000, 1e-6),
    (0.02, 1.0, 1000, 1e-5),
    (0.05, 1.3, 2000, 1e-6),
    (0.05, 2.0, 300, 1e-9),
    (0.1, 1.0, 100, 1e-5),
    (0.1, 2.5, 1000, 1e-6),
    (0.1, 0.8, 50, 1e-6),
    (0.25, 1.7, 200, 1e-7),
    (0.5, 2.0, 50, 1e-6),
    (0.5, 4.0, 400, 1e-5),
    (1.0, 1.0, 1, 1e-5),
    (1.0, 2.0, 10, 1e-6),
    (1.0, 8.0, 1000, 1e-7),
    (0.003, 2.0, 1, 1e-6),
    (0.2, 6.0, 2000, 1e-8),
]


def compute() -> None:
    """Runs inside the venv: computes every row and writes the CSV."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant as pld
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    from importlib.metadata import version

    assert version("dp-accounting") == DP_ACCOUNTING_VERSION, version("dp-accounting")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", newline="") as f:
        f.write(f"# dp-accounting=={DP_ACCOUNTING_VERSION} PLDAccountant(interval 1e-4) and "
                "RdpAccountant(default orders), "
                "SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps).get_epsilon(delta)\n")
        w = csv.writer(f)
        w.writerow(["q", "sigma", "steps", "delta", "epsilon_pld", "epsilon_rdp"])
        for q, sigma, steps, delta in SETTINGS:
            event = dp_event.SelfComposedDpEvent(
                dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
            )
            start = time.time()
            a = pld.PLDAccountant()
            a.compose(event)
            eps_pld = a.get_epsilon(delta)
            r = rdp.RdpAccountant()
            r.compose(event)
            eps_rdp = r.get_epsilon(delta)
            print(f"q {q} sigma {sigma} steps {steps} delta {delta}: PLD {eps_pld:.5f} "
                  f"RDP {eps_rdp:.5f} ({time.time() - start:.1f} s)", flush=True)
            w.writerow([repr(q), repr(sigma), steps, repr(delta), repr(float(eps_pld)),
                        repr(float(eps_rdp))])
    print(f"wrote {len(SETTINGS)} rows to {OUT}")


if __name__ == "__main__":
    run(__file__, compute)
