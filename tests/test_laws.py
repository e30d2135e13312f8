"""The one typed reader of a fit result's laws (plmscale.laws), and the planner refusing an untrusted law."""

import pytest
from plmscale import planner
from plmscale.laws import MethodLaws, method_laws
from plmscale.powerlaw import PowerLaw

from tests.test_planner import PLAN_KW, symmetric_fit


def test_method_laws_reads_laws_intervals_and_problems():
    fit = symmetric_fit()
    fit["approach3_bootstrap"] = {"percentiles": {"a": {"lo": 0.45, "median": 0.5, "hi": 0.55},
                                                  "b": {"lo": 0.4, "median": 0.5, "hi": 0.6}}}  # fmt: skip
    laws = method_laws(fit, "approach3")
    assert laws.usable and laws.problem is None
    assert (
        laws.n_opt == PowerLaw(6**-0.5, 0.5) and laws.n_opt_ci == (0.45, 0.55) and laws.d_opt_ci == (0.4, 0.6)
    )
    assert MethodLaws.from_dict(laws.to_dict()) == laws
    skipped = method_laws(fit, "approach1")
    assert not skipped.usable and skipped.problem == "only 1 envelope point(s) from 3 points"
    assert method_laws(fit, "notebook_envelope").problem == "the method is absent from the fit result"
    fit["approach3"]["best_converged"] = False
    fit["approach3"]["best_message"] = "ABNORMAL_TERMINATION"
    stalled = method_laws(fit, "approach3")
    assert stalled.n_opt is not None and not stalled.usable
    assert stalled.problem == "did not converge (ABNORMAL_TERMINATION)"


def test_the_planner_does_not_plan_with_a_law_that_did_not_converge():
    fit = symmetric_fit()
    fit["approach3"]["best_converged"] = False
    fit["approach3"]["best_message"] = "ABNORMAL_TERMINATION"
    with pytest.raises(ValueError, match=r"approach3 has no usable N_opt law in this fit: did not converge"):
        planner.plan(fit, flops=1e20, **PLAN_KW)
