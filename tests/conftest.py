"""Fixtures shared by the whole test suite.

- Every test runs torch on one CPU thread: the tiny models run fastest (and deterministically) so, and the test
  machine's cores are shared. A test (or a recipe it runs) that changes the thread count is undone afterwards.
- ``@pytest.mark.shared_data("wsi/x.svs", ...)`` skips a test when ``../shared/data`` (or one of the named paths
  inside it) is absent; the ``shared_data_dir`` fixture gives that folder.
- ``pytestmark = pytest.mark.usefixtures("no_full_gc")`` in a module that trains many tiny models skips
  accelerate's full ``gc.collect()`` after each ``train()``.
"""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run torch on one thread for the whole session (set before any module-scoped fixture builds a model)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _restore_one_thread(one_thread):
    """Put torch back on one thread after a test that changed it (a recipe's ``num_threads``, ``--threads``)."""
    yield
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def no_full_gc():
    """accelerate runs gc.collect() after every train() (~1 s each in a full pytest process, on CPU for nothing)."""
    import accelerate.utils.memory as memory

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "gc", type("NoGC", (), {"collect": staticmethod(lambda *a, **k: 0)}))
        yield


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``shared_data`` tests when the real data (or a path the marker names) is not there."""
    marker = item.get_closest_marker("shared_data")
    if marker is None:
        return
    missing = [p for p in (SHARED_DATA, *(SHARED_DATA / a for a in marker.args)) if not p.exists()]
    if missing:
        pytest.skip(f"real data not found at {missing[0]} (needs ../shared/data)")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (real TCGA reports and slides); tests using it carry ``@pytest.mark.shared_data``."""
    return SHARED_DATA
