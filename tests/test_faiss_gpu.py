"""faiss k-means leaves the GPU path for GPUs its wheels have no kernels for, and after any CUDA error."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from test_clustering import FakeFaiss, blobs

import progress_core.clustering.kmeans as clustering
from progress_core.clustering.faiss_gpu import unsupported_gpu_reason


@pytest.mark.parametrize(
    "capabilities, device",
    [([(8, 0)], "gpu"), ([(8, 9)], "gpu"), ([(7, 0)], "gpu"), ([(9, 0)], "cpu"), ([(6, 1)], "cpu"), (None, "gpu")],
)
def test_auto_keeps_kmeans_off_gpus_outside_the_wheels_kernels(capabilities, device, monkeypatch, caplog):
    asked: list[int] = []
    monkeypatch.setattr(clustering, "device_capabilities", lambda n: asked.append(n) or capabilities)
    fake = FakeFaiss(1)
    with caplog.at_level("WARNING"):
        index, used = clustering.flat_index(8, spherical=True, gpu="auto", faiss_module=fake)
    assert asked == [1] and used == device and (fake.calls == []) == (device == "cpu")
    assert ("faiss k-means runs on the CPU: GPU 0 has compute capability" in caplog.text) == (device == "cpu")
    forced = FakeFaiss(1)
    assert clustering.flat_index(8, spherical=True, gpu=True, faiss_module=forced)[1] == "gpu"


def test_a_node_with_one_h100_among_a100s_stays_on_the_cpu():
    reason = unsupported_gpu_reason([(8, 0), (9, 0)])
    assert reason is not None and reason.startswith("GPU 1 has compute capability 9.0")
    assert "clustering.use_gpu=true" in reason
    assert unsupported_gpu_reason([(8, 0), (8, 6)]) is None and unsupported_gpu_reason(None) is None


def _gpu_path(monkeypatch, to_gpu):
    """Real faiss with its GPU entry points replaced: one GPU of capability 8.0 whose index ``to_gpu`` makes."""
    calls: list[str] = []
    monkeypatch.setattr(clustering, "faiss_gpu_count", lambda module=None: 1)
    monkeypatch.setattr(clustering, "device_capabilities", lambda n: [(8, 0)])
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: calls.append("resources") or "res", raising=False)
    monkeypatch.setattr(
        faiss, "index_cpu_to_gpu", lambda res, dev, index: calls.append("to_gpu") or to_gpu(index), raising=False
    )
    return calls


@pytest.mark.parametrize("where", ["moving the index", "training"])
def test_a_cuda_error_reruns_kmeans_on_the_cpu_with_the_reason_logged(where, monkeypatch, caplog):
    """A CUDA error while the index moves to the GPU, or one faiss raises inside training (an index it cannot
    train with stands in for a kernel that does not exist), gives the CPU's exact clustering."""
    x, _ = blobs()
    cpu = clustering.spherical_kmeans(x, 5, niter=10, gpu=False)

    def to_gpu(index):
        if where == "moving the index":
            raise RuntimeError("CUDA error 209: no kernel image is available for execution on the device")
        return faiss.IndexFlatIP(index.d + 1)

    calls = _gpu_path(monkeypatch, to_gpu)
    with caplog.at_level("WARNING"):
        ours = clustering.spherical_kmeans(x, 5, niter=10, gpu="auto")
    assert calls == ["resources", "to_gpu"] and ours.device == "cpu"
    np.testing.assert_array_equal(ours.centroids, cpu.centroids)
    np.testing.assert_array_equal(ours.assignment, cpu.assignment)
    assert "failed (RuntimeError: " in caplog.text and "running it again on the CPU" in caplog.text
    if where == "moving the index":
        assert "faiss k-means on the GPU failed (RuntimeError: CUDA error 209: no kernel image" in caplog.text


def test_an_error_on_the_cpu_is_not_retried(monkeypatch):
    monkeypatch.setattr(clustering, "_assign", lambda index, features: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        clustering.spherical_kmeans(blobs()[0], 5, niter=2, gpu=False)
