"""The experiment grid: every cached run behind the book as a small job spec, run in-process or on Dask distributed.

``plan_book(scale)`` / ``plan_notebook(name, scale)`` give the jobs behind the notebooks (their keys are the cache
entries the notebooks then read), ``run_grid(plan, executor=...)`` runs them (``"local"`` in-process by default;
``"processes"``, ``"cuda"``, ``"slurm"``, ``"pbs"``, an address or a ``distributed.Client`` with the optional extra
``ssdlib[grid]``), and ``python -m ssdlib.grid run|plan --scale ...`` does both from the command line. See the book's
page "Running at paper scale and on a cluster".
"""
from .executors import EXECUTORS, GridError, make_client, run_grid
from .jobs import GRID_KINDS, KINDS, Job, JobError, execute, job_threads, run_job
from .plan import Plan, notebook_parameters, plan_attack_table, plan_attack_variants, plan_book, plan_notebook

__all__ = ["Job", "JobError", "KINDS", "GRID_KINDS", "Plan", "plan_book", "plan_notebook", "plan_attack_table",
           "plan_attack_variants", "notebook_parameters", "run_grid", "run_job", "execute", "job_threads",
           "make_client", "GridError", "EXECUTORS"]
