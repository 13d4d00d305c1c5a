"""Expected RDP accounting results from Google's dp-accounting, for RDPAccountant's tests.

Made with dp-accounting 0.6.0 (numpy 2.4.6, scipy 1.17.1, Python 3.11). Run from the repo root:
    python3 -m venv .venv-dp && .venv-dp/bin/pip install dp-accounting==0.6.0
    .venv-dp/bin/python Tests/Fixtures/privacy/make_accountant_fixture.py
Writes Tests/Fixtures/privacy/dp_accounting_rdp.json (next to this script). Takes about 30 seconds.

Every point is the Poisson-subsampled Gaussian (sampling rate q, noise multiplier sigma) composed
`steps` times in a fresh RdpAccountant with its default orders and the add-or-remove-one relation:
  epsilon: get_epsilon_and_optimal_order(delta), indexed [q][sigma][steps][delta] ("order" likewise);
  delta:   get_delta(epsilon), indexed [q][sigma][steps][epsilon];
  rdp:     the per-order RDP of one step at q 0.5, sigma 5, null where dp-accounting gives inf
           (its fractional-order series did not converge in 1000 terms and the order is dropped);
  calibration: calibrate_dp_mechanism(RdpAccountant, event(sigma), epsilon, delta) with its default
           bracket (LowerEndpointAndGuess(0, 1)) and tolerance (1e-6), plus the epsilon reached.
Numbers are rounded to 12 significant digits (rdp to 10) to keep the file small.
"""
import json
import math
import os
import sys
from importlib.metadata import version

from absl import logging

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

logging.set_verbosity(logging.ERROR)  # the non-convergence warnings are expected (see "rdp")

VERSION = "0.6.0"
installed = version("dp-accounting")
if installed != VERSION:
    sys.exit(f"need dp-accounting=={VERSION}, found {installed}")


def event(q, sigma, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def accountant(q, sigma, steps):
    return dp_accounting.rdp.RdpAccountant().compose(event(q, sigma, steps))


def num(x, digits=12):
    x = float(x)
    if math.isinf(x) or math.isnan(x):
        return None
    return float(f"{x:.{digits}g}")


Q = [1e-3, 1e-2, 0.1, 0.5]
SIGMA = [0.5, 0.8, 1.0, 2.0, 5.0]
STEPS = [1, 10, 1000, 10000]
DELTA = [1e-5, 1e-8]

epsilon, order = [], []
for q in Q:
    e_q, o_q = [], []
    for sigma in SIGMA:
        e_s, o_s = [], []
        for steps in STEPS:
            acc = accountant(q, sigma, steps)
            pairs = [acc.get_epsilon_and_optimal_order(d) for d in DELTA]
            e_s.append([num(e) for e, _ in pairs])
            o_s.append([float(o) for _, o in pairs])
        e_q.append(e_s)
        o_q.append(o_s)
    epsilon.append(e_q)
    order.append(o_q)

DELTA_STEPS = [10, 1000]
DELTA_EPSILON = [1.0, 4.0]
delta = [[[[num(accountant(q, sigma, steps).get_delta(e)) for e in DELTA_EPSILON]
           for steps in DELTA_STEPS] for sigma in SIGMA] for q in Q]

RDP_CASES = [(0.5, 5.0)]
rdp = [{"q": q, "sigma": sigma, "rdp": [num(r, 10) for r in accountant(q, sigma, 1).rdp]}
       for q, sigma in RDP_CASES]

calibration = []
for target in [1.0, 3.0, 8.0]:
    for d in [1e-5]:
        for q in [0.01, 0.05, 0.25]:
            for steps in [100, 1000]:
                sigma = dp_accounting.calibrate_dp_mechanism(
                    dp_accounting.rdp.RdpAccountant,
                    lambda s, q=q, steps=steps: event(q, s, steps),
                    target, d)
                calibration.append({
                    "epsilon": target, "delta": d, "q": q, "steps": steps,
                    "sigma": num(sigma), "reached": num(accountant(q, sigma, steps).get_epsilon(d)),
                })

out = {
    "generator": "Tests/Fixtures/privacy/make_accountant_fixture.py",
    "versions": {"dp_accounting": installed, "numpy": version("numpy"), "scipy": version("scipy")},
    "orders": [float(o) for o in rdp_lib.DEFAULT_RDP_ORDERS],
    "grid": {"q": Q, "sigma": SIGMA, "steps": STEPS, "delta": DELTA,
             "epsilon": epsilon, "order": order},
    "delta": {"q": Q, "sigma": SIGMA, "steps": DELTA_STEPS, "epsilon": DELTA_EPSILON,
              "delta": delta},
    "rdp": rdp,
    "calibration": calibration,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dp_accounting_rdp.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"), allow_nan=False)
    f.write("\n")
print(f"wrote {path} ({os.path.getsize(path)} bytes)")
