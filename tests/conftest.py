import os

import pytest
import torch

# Triton kernels run on CPU tensors through its interpreter only when this is set
# before triton is imported (see ../shared/PLATFORM.md); on a GPU machine they run natively.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# Local runs draw fresh examples each time (to find new failures); CI draws a fixed set, so
# that its verdict on a commit does not depend on luck. A failure prints its reproduce blob.
settings.register_profile(
    "sgan_fast", deadline=None, max_examples=int(os.environ.get("SGAN_FAST_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")), print_blob=True)
settings.load_profile("sgan_fast")

HAS_GPU = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def poisoned_outputs():
    """Fresh tensors from torch.empty (also at::empty inside the C++ ops) come filled with
    NaN, so an output element a kernel forgets to write fails the comparison."""
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
