"""Shared fixtures: the dataset location and a freshly exported (randomly initialised) model for plumbing tests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DCMIF_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"dataset folder {SHARED_DATA} is absent (set DCMIF_DATA to use another)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small vi/ + ir/ folder generated here (read only by the tests that use it)."""
    from synthetic_pairs import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs"))


GATE_OPEN_LOGIT = 5.0  # added to the warmth gate's initial logit, σ⁻¹(0.05) ≈ −2.9
RANDOM_OFFSET_STD = 0.05


@pytest.fixture(scope="session")
def random_tiny_bundle():
    """A tiny DCMIF network with random (seeded) weights, non-trivial in every stage."""
    import torch

    from dcmif_ros.inference.checkpoint import DCMIFBundle
    from dcmif_ros.models import JSRL, FiLMHeads, get_config
    from dcmif_ros.models.dcmif import dcmif_from_jsrl
    from dcmif_ros.prior import MINILM_FEATURE_DIM
    from dcmif_ros.prior.embedded import DESCRIPTION_SOURCE
    from dcmif_ros.prior.text_encoder import MINILM_NAME

    torch.manual_seed(0)
    jsrl = JSRL(get_config("tiny"))
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach())
    film = FiLMHeads(MINILM_FEATURE_DIM, net.config.atoms)
    with torch.no_grad():
        for param in list(net.rin.parameters()) + list(net.rfn.parameters()) + list(film.parameters()):
            param.add_(torch.randn_like(param) * 0.02)
        # warmth fusion admits only warmth (the positive part of RIN's offset field): a gate mostly open and an
        # offset field of some size make the fused image depend on RIN, and so on the prior
        net.rfn.project.bias.add_(GATE_OPEN_LOGIT)
        net.rin.backbone.exit.project.weight[net.config.atoms :].normal_(std=RANDOM_OFFSET_STD)
    encoder_id = f"{DESCRIPTION_SOURCE}+{MINILM_NAME}"  # what EmbeddedPriorEncoder reports
    return DCMIFBundle(net.eval(), film.eval(), encoder_id, MINILM_FEATURE_DIM, {"purpose": "tests"})


@pytest.fixture(scope="session")
def random_tiny_onnx(random_tiny_bundle, synthetic_dataset, tmp_path_factory) -> Path:
    """The random tiny network exported to ONNX (+ FiLM heads, fp16 and int8 graphs, manifest) in a temporary
    folder; int8 calibrated on the synthetic pairs, so it exists without ../shared/data."""
    from dcmif_ros.inference.export import export_bundle

    return export_bundle(random_tiny_bundle, tmp_path_factory.mktemp("model"), "dcmif_random", trained=False,
                         int8_data=[synthetic_dataset])


@pytest.fixture()
def model_copy(random_tiny_onnx, tmp_path) -> Path:
    """The exported random model's files copied into a temporary folder, for tests that damage or edit them."""
    for path in random_tiny_onnx.parent.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / random_tiny_onnx.name


@pytest.fixture
def unwritable_path(tmp_path) -> Path:
    """A path nothing can be created at: inside a read-only folder, or, for root (who ignores permissions),
    inside a regular file."""
    if os.geteuid() == 0:
        blocker = tmp_path / "a_file"
        blocker.write_text("")
        yield blocker / "out"
        return
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder / "out"
    folder.chmod(0o700)
