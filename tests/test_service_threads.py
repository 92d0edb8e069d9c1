"""The model threads' intra-op setting covers torch and numpy's BLAS pool alike."""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_info, threadpool_limits


def test_model_thread_setup_limits_torch_and_the_blas_pool() -> None:
    import numpy  # noqa: F401 - loads the BLAS library whose pool is limited
    import torch

    from bentos.service import _model_threads

    seen: dict[str, object] = {}

    def model_thread() -> None:
        _model_threads(1)
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = threadpool_limits(user_api="blas")  # restored below: the BLAS setting is global
    try:
        worker = threading.Thread(target=model_thread)
        worker.start()
        worker.join()
    finally:
        before.restore_original_limits()
    assert seen["torch"] == 1
    assert seen["blas"] and set(seen["blas"]) == {1}
