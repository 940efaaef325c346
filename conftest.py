"""Session setup shared by the unit tests (``tests/``) and the notebooks run by nbval (``notebooks/``).

README's test command runs two pytest-xdist workers with ``--dist loadgroup --no-loadscope-reorder``:

* every notebook and every test module is one xdist group, so a notebook's cells run in order in one kernel on one
  worker, and a module's session fixtures are built once by the worker that runs it;
* groups are handed out in collection order, which puts the notebooks first, longest first (:data:`LONGEST_FIRST`,
  from the CI timings in README), then the unit tests, so the workers finish together;
* each worker takes an equal share of the CPU threads (``OMP_NUM_THREADS``, else the CPU count) and passes it on to
  the notebook kernels it starts — on CI's 2 cores, one thread each.

Without ``-n`` (a plain ``pytest`` run) only the ordering applies.
"""
import os

import pytest

#: notebook file-name prefixes, longest CI run first
LONGEST_FIRST = ("02_", "03_", "05_", "04_", "01_")
#: unit-test modules as long as a notebook, handed out right after the two longest notebooks
LONG_MODULES = ("test_paper_smoke.py",)


def threads_per_worker() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    total = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    return max(1, total // max(workers, 1))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        threads = threads_per_worker()
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)   # inherited by kernels
        import torch

        torch.set_num_threads(threads)


def _rank(item) -> tuple:
    name = item.path.name
    if item.path.suffix == ".ipynb":
        prefixes = [i for i, p in enumerate(LONGEST_FIRST) if name.startswith(p)]
        return (0, prefixes[0] if prefixes else len(LONGEST_FIRST), name)
    if name in LONG_MODULES:
        return (0, 1.5, name)
    return (1, 0, "")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)   # stable: a module's or notebook's items keep their order
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(name=item.path.name))
