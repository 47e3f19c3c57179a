"""Embedding lands where the hardware is: on a machine with an RTX 5090, an H200 or a
Meteor Lake iGPU (hwkit's mock devices), the core plans the embedder onto that device in
that device's dtype, and the vectors are computed there and are right."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hwkit.jobs import load_embedder
from hwkit.plugins.embedders.torch_embedder import TorchEmbedder
from hwkit.testing import MockDevice, mock_runtime

pytestmark = pytest.mark.slow

TEXTS = [
    "The mitochondria is the powerhouse of the cell.",
    "A short one.",
    "Gradient checkpointing trades compute for memory by recomputing activations.",
    "Paris is the capital of France.",
]
# profile -> (device id, plan dtype)
HARDWARE = {
    "rtx5090": ("cuda:0", "bfloat16"),
    "h200": ("cuda:0", "bfloat16"),
    "arc-meteor-lake": ("xpu:0", "float16"),
}


@pytest.fixture(scope="module", params=sorted(HARDWARE))
def placed(request: pytest.FixtureRequest) -> tuple[str, TorchEmbedder]:
    profile = request.param
    embedder = load_embedder("torch", runtime=mock_runtime(profile))
    assert isinstance(embedder, TorchEmbedder)
    return profile, embedder


def test_the_embedder_is_on_the_planned_mock_device(placed: tuple[str, TorchEmbedder]) -> None:
    profile, emb = placed
    device_id, _ = HARDWARE[profile]
    assert isinstance(emb.device, MockDevice) and emb.device.present
    assert emb.device.profile.name == profile
    assert emb.device.id == device_id != "cpu:0"
    assert emb.plan is not None and emb.plan.job == "embed" and emb.plan.device == device_id
    assert emb.batch_size == emb.plan.micro_batch


def test_encoder_weights_are_in_the_plan_dtype(placed: tuple[str, TorchEmbedder]) -> None:
    import torch

    profile, emb = placed
    _, dtype = HARDWARE[profile]
    assert emb.plan is not None and emb.plan.dtype == dtype
    assert {p.dtype for p in emb.encoder.parameters()} == {getattr(torch, dtype)}


def test_it_embeds_correctly_there(placed: tuple[str, TorchEmbedder]) -> None:
    _, emb = placed
    vectors = emb.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), emb.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    query = emb.embed(["What is the capital of France?"], kind="query")[0]
    assert int(np.argmax(vectors @ query)) == 3


def test_the_forward_pass_runs_through_that_device(placed: tuple[str, TorchEmbedder]) -> None:
    import torch

    _, emb = placed
    device: Any = emb.device
    raised = device.oom_raised
    device.inject_oom(times=1)
    with pytest.raises(torch.OutOfMemoryError, match=emb.device.id):
        emb.embed(["an out-of-memory error on the planned device"])
    assert device.oom_raised == raised + 1
    assert emb.embed(["and then it works again"]).shape == (1, emb.dim)
