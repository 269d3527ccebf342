"""Reports of training runs: results tables (tables), figures (plots) and `report(run_dirs, out_dir)`."""

from mopo_jax.report.compose import report
from mopo_jax.report.runs import load_run, policy_histories
from mopo_jax.report.tables import GroupSummary, bootstrap_ci, iqm, summarize

__all__ = ["report", "load_run", "policy_histories", "GroupSummary", "bootstrap_ci", "iqm", "summarize"]
