"""dcmif_ros.prior: the prior backends for real (MiniLM from the wheel, a tiny VLM built here) and the refresher.

The refresher's compute is real too: a stand-in first pass (blurred luma as pseudo-IR, in place of the
engine) → EmbeddedPriorEncoder → fixed random FiLM heads (numpy Linear F → B) → Prior.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import threading
import time

import cv2
import numpy as np
import pytest

from dcmif_ros.prior import (
    MINILM_FEATURE_DIM, SYNTHETIC_INFRARED_TEXT, VISIBLE_IMAGE_TEXT, EmbeddedPriorEncoder, IncompatiblePriorEncoder,
    NullPriorEncoder, Prior, PriorRefresher, RefreshConfig, SentenceEncoder, VisionLanguageConfig,
    VisionLanguagePriorEncoder, add_prior_argument, check_compatible, describe_pair, make_prior_encoder,
)
from dcmif_ros.prior.refresher import WORKER_THREAD_NAME
from dcmif_ros.prior.text_encoder import bundled_minilm_dir

NUM_ATOMS = 64
FRAME_SHAPE = (480, 640)
#: Readers in the swap test pause this long between reads, like an inference loop, so they do not starve the
#: refresher of the GIL on a small machine.
READER_PAUSE_S = 0.0002


# ---------------------------------------------------------------- scenes and a real compute


def scene(seed: int, night: bool = False, hot_cell: tuple[int, int] = (2, 2)) -> np.ndarray:
    """A 640×480 BGR street-like frame: textured background, a bright 'person' in grid cell ``hot_cell``."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SHAPE
    base = 25 if night else 110
    frame = np.full((height, width, 3), base, np.uint8)
    frame = cv2.add(frame, rng.integers(0, 30, frame.shape, dtype=np.uint8))
    for _ in range(12):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        colour = tuple(int(c) for c in rng.integers(base // 2, base + 40, 3))
        cv2.rectangle(frame, (x, y), (x + int(rng.integers(20, 120)), y + int(rng.integers(20, 80))), colour, -1)
    row, col = hot_cell
    cx, cy = (2 * col + 1) * width // 6, (2 * row + 1) * height // 6
    cv2.rectangle(frame, (cx - 20, cy - 50), (cx + 20, cy + 50), (250, 250, 250), -1)
    return frame


def stand_in_pseudo_ir(frame_bgr: np.ndarray) -> np.ndarray:
    """Deterministic stand-in for the engine's first pass (identity FiLM): smoothed luma in [0, 1]."""
    luma = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    return cv2.GaussianBlur(luma, (5, 5), 0)


class RandomFilmHeads:
    """Fixed random Linear F → B for γ and β (the checkpoint's Φγ, Φβ are the lead's; any fixed map will do)."""

    def __init__(self, feature_dim: int, num_atoms: int = NUM_ATOMS, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.gamma_weight = rng.normal(0, 0.1, (num_atoms, feature_dim)).astype(np.float32)
        self.beta_weight = rng.normal(0, 0.1, (num_atoms, feature_dim)).astype(np.float32)

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 1.0 + self.gamma_weight @ features, self.beta_weight @ features


def embedded_compute(encoder: EmbeddedPriorEncoder, delay_s: float = 0.0):
    """frame → Prior through the real encoder; also returns what it produced, keyed by source text."""
    heads = RandomFilmHeads(encoder.feature_dim)
    produced: dict[str, Prior] = {}

    def compute(frame_bgr: np.ndarray) -> Prior:
        time.sleep(delay_s)
        review = encoder.encode(frame_bgr, stand_in_pseudo_ir(frame_bgr))
        prior = Prior(*heads(review.features), source_text=review.text)
        produced[review.text] = prior
        return prior

    return compute, produced


@pytest.fixture(scope="module")
def sentence_encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture(scope="module")
def embedded(sentence_encoder) -> EmbeddedPriorEncoder:
    return EmbeddedPriorEncoder(sentence_encoder)


@pytest.fixture(autouse=True)
def no_hub_access(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- describe + embedded encoder


def test_description_measures_night_and_hot_region_location():
    night = scene(1, night=True, hot_cell=(2, 2))
    description = describe_pair(night, stand_in_pseudo_ir(night))
    stats = description.statistics
    assert stats.is_night and "at night" in description.text
    assert stats.hot_locations[0] == "lower right"
    assert 0.0 < stats.hot_fraction < 0.1
    assert "mostly in the lower right" in description.text

    day = scene(1, hot_cell=(0, 0))
    day_description = describe_pair(day, stand_in_pseudo_ir(day))
    assert not day_description.statistics.is_night and "in daytime" in day_description.text
    assert day_description.statistics.hot_locations[0] == "upper left"


def test_description_of_a_flat_infrared_image_reports_no_hot_region():
    description = describe_pair(scene(2), np.full(FRAME_SHAPE, 0.3, np.float32))
    assert description.statistics.hot_fraction == 0.0
    assert description.statistics.infrared_edge_density == 0.0
    assert "No distinct hot regions" in description.text


def test_embedded_encoder_is_deterministic_and_tells_images_apart(embedded):
    first, second = scene(3), scene(4, night=True, hot_cell=(0, 1))
    a = embedded.encode(first, stand_in_pseudo_ir(first))
    a_again = embedded.encode(first.copy(), stand_in_pseudo_ir(first))
    b = embedded.encode(second, stand_in_pseudo_ir(second))

    assert embedded.feature_dim == MINILM_FEATURE_DIM == 384
    assert a.features.shape == (384,) and a.features.dtype == np.float32
    assert np.isclose(np.linalg.norm(a.features), 1.0, atol=1e-5)
    assert np.array_equal(a.features, a_again.features) and a.text == a_again.text
    assert not np.allclose(a.features, b.features, atol=1e-3)
    assert a.text.startswith(f"{VISIBLE_IMAGE_TEXT} {SYNTHETIC_INFRARED_TEXT} ")
    for sentence in describe_pair(first, stand_in_pseudo_ir(first)).sentences:
        assert sentence in a.text
    assert a.encoder_id == embedded.encoder_id == "embedded-describe-v1+all-MiniLM-L6-v2"
    assert not embedded.is_identity


def test_minilm_features_follow_sentence_meaning(sentence_encoder):
    hot = sentence_encoder.encode("A hot person walks on the road at night.")
    warm = sentence_encoder.encode("A warm pedestrian is walking along the street in the dark.")
    unrelated = sentence_encoder.encode("The quarterly report lists revenue by region.")
    assert float(hot @ warm) > float(hot @ unrelated) + 0.3


def test_loading_the_text_encoder_draws_no_progress_bar_and_keeps_the_switch(capfd):
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    SentenceEncoder()
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out and "it/s" not in captured.err, captured.err
    assert transformers_logging.is_progress_bar_enabled(), "other transformers users keep their progress bars"


def test_embedded_encoder_rejects_bad_inputs(embedded):
    frame = scene(5)
    with pytest.raises(ValueError, match="uint8"):
        embedded.encode(frame.astype(np.float32), stand_in_pseudo_ir(frame))
    with pytest.raises(ValueError, match="pseudo-IR"):
        embedded.encode(frame, frame)
    with pytest.raises(ValueError, match="NaN"):
        embedded.encode(frame, np.full(FRAME_SHAPE, np.nan, np.float32))


def test_embedded_encode_latency_on_640x480(embedded, capsys):
    frame = scene(6)
    pseudo_ir = stand_in_pseudo_ir(frame)
    embedded.encode(frame, pseudo_ir)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        embedded.encode(frame, pseudo_ir)
        times.append(time.perf_counter() - started)
    median_ms = 1000.0 * float(np.median(times))
    with capsys.disabled():
        print(f"\nembedded prior encode, 640x480: median {median_ms:.1f} ms, min {1000 * min(times):.1f} ms")
    assert median_ms < 5000.0


# ---------------------------------------------------------------- null encoder, compatibility, specs


def test_null_encoder_gives_zero_features_and_is_identity():
    encoder = NullPriorEncoder()
    frame = scene(7)
    review = encoder.encode(frame, stand_in_pseudo_ir(frame))
    assert encoder.is_identity and encoder.encoder_id == "none"
    assert review.features.shape == (MINILM_FEATURE_DIM,) and not review.features.any()


def test_check_compatible_names_both_encoders(embedded):
    check_compatible(embedded, embedded.encoder_id, 384)
    with pytest.raises(IncompatiblePriorEncoder) as error:
        check_compatible(embedded, "vlm:Qwen2-VL-2B-Instruct+all-MiniLM-L6-v2", 384)
    assert "vlm:Qwen2-VL-2B-Instruct+all-MiniLM-L6-v2" in str(error.value)
    assert embedded.encoder_id in str(error.value)
    with pytest.raises(IncompatiblePriorEncoder, match="768-d"):
        check_compatible(embedded, embedded.encoder_id, 768)
    check_compatible(NullPriorEncoder(), embedded.encoder_id, 384)  # identity FiLM fits any checkpoint


def test_prior_specs_build_backends_or_fail_clearly(tmp_path):
    assert isinstance(make_prior_encoder("none"), NullPriorEncoder)
    assert isinstance(make_prior_encoder(" embedded "), EmbeddedPriorEncoder)
    for bad in ("llm", "vlm:", "Embedded", ""):
        with pytest.raises(ValueError, match="expected 'embedded', 'none' or 'vlm:PATH'"):
            make_prior_encoder(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        make_prior_encoder(f"vlm:{tmp_path / 'missing'}")


def test_prior_argument_is_one_shared_definition(capsys):
    parser = argparse.ArgumentParser()
    add_prior_argument(parser)
    assert parser.parse_args([]).prior == "embedded"
    assert parser.parse_args(["--prior", "vlm:/models/qwen"]).prior == "vlm:/models/qwen"
    with pytest.raises(SystemExit):
        parser.parse_args(["--prior", "gpt"])
    assert "unknown prior 'gpt'" in capsys.readouterr().err


# ---------------------------------------------------------------- vision-language backend, tiny model built here

# A tiny LLaVA (CLIP vision tower + Llama) with a word-level tokenizer: the whole checkpoint is made here, so no
# download is needed. LLaVA rather than Qwen2-VL: with transformers 5, Qwen2-VL's processor cannot be built
# without torchvision (it always includes a video processor), and torchvision is not a dependency.

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }} {% endif %}{% endfor %}</s>{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
TINY_IMAGE_SIDE = 28
TINY_PATCH = 14


def build_tiny_vlm(folder) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil, GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    import torch

    corpus = f"{VISIBLE_IMAGE_TEXT} {SYNTHETIC_INFRARED_TEXT} user assistant : warmer cooler brighter darker"
    words = sorted(set(re.findall(r"\w+|[^\w\s]", corpus)))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + words)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIDE}, crop_size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=TINY_PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    special = {name: vocab[token] for name, token in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"))}
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, image_size=TINY_IMAGE_SIDE, patch_size=TINY_PATCH, projection_dim=32,
        ),
        text_config=dict(
            model_type="llama", vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
            bos_token_id=special["bos"], eos_token_id=special["eos"], pad_token_id=special["pad"],
        ),
        image_token_id=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    # Sampling defaults, as real chat checkpoints ship: the encoder must override them with greedy decoding.
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.7, top_p=0.8, bos_token_id=special["bos"], eos_token_id=special["eos"],
        pad_token_id=special["pad"],
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava")
    build_tiny_vlm(folder)
    return folder


def test_vision_language_encoder_end_to_end_is_deterministic(tiny_vlm_dir, sentence_encoder):
    encoder = VisionLanguagePriorEncoder(tiny_vlm_dir, VisionLanguageConfig(max_new_tokens=12), sentence_encoder)
    frame = scene(8)
    first = encoder.encode(frame, stand_in_pseudo_ir(frame))
    second = encoder.encode(frame, stand_in_pseudo_ir(frame))
    assert first.text and first.text == second.text
    assert np.array_equal(first.features, second.features)
    assert np.array_equal(first.features, sentence_encoder.encode(first.text))
    assert encoder.feature_dim == first.features.size == 384
    assert first.encoder_id == encoder.encoder_id == f"vlm:{tiny_vlm_dir.name}+all-MiniLM-L6-v2"
    assert len(first.text.split()) <= 12 and not encoder.is_identity


def test_vision_language_spec_loads_a_model_folder(tiny_vlm_dir):
    encoder = make_prior_encoder(f"vlm:{tiny_vlm_dir}")
    assert isinstance(encoder, VisionLanguagePriorEncoder)
    assert encoder.encoder_id.startswith(f"vlm:{tiny_vlm_dir.name}+")


def test_vision_language_encoder_rejects_a_text_only_model():
    with pytest.raises(ValueError, match="'bert' model, which is not a vision-language"):
        VisionLanguagePriorEncoder(bundled_minilm_dir())


def test_vision_language_encoder_rejects_a_folder_without_model(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        VisionLanguagePriorEncoder(tmp_path)


# ---------------------------------------------------------------- Prior


def test_prior_is_immutable_and_owns_its_arrays():
    gamma = np.full(NUM_ATOMS, 2.0, np.float32)
    prior = Prior(gamma, np.zeros(NUM_ATOMS, np.float32), source_text="x")
    gamma[:] = 5.0
    assert np.all(prior.gamma == 2.0)
    with pytest.raises(ValueError):
        prior.gamma[0] = 1.0
    with pytest.raises(AttributeError):
        prior.version = 3
    identity = Prior.identity(NUM_ATOMS)
    assert np.all(identity.gamma == 1.0) and not identity.beta.any() and identity.num_atoms == NUM_ATOMS
    with pytest.raises(ValueError, match="same shape"):
        Prior(np.ones(3), np.zeros(4))


# ---------------------------------------------------------------- refresher


def frames(count: int):
    """Distinct frames (day/night and hot location vary) so consecutive priors differ."""
    return [scene(100 + i, night=i % 2 == 1, hot_cell=(i % 3, (i // 3) % 3)) for i in range(count)]


def version_and_frame(prior: Prior) -> tuple[int, int]:
    return prior.version, prior.frame_index


def test_synchronous_refresh_happens_exactly_every_n_frames(embedded):
    compute, produced = embedded_compute(embedded)
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=5, synchronous=True), Prior.identity(NUM_ATOMS))
    assert refresher.current.version == 0 and refresher.current.source_text == "identity"
    seen = []
    for index, frame in enumerate(frames(23)):
        refresher.notify_frame(frame)
        seen.append((index, *version_and_frame(refresher.current)))
    refreshed_at = [index for index, version, _ in seen if index == 0 or version != seen[index - 1][1]]
    assert refreshed_at == [0, 5, 10, 15, 20]
    assert [frame_index for index, _, frame_index in seen if index in refreshed_at] == refreshed_at
    current = refresher.current
    assert current.version == 5 and current.age_frames(refresher.frame_count) == 3
    assert np.array_equal(current.gamma, produced[current.source_text].gamma)
    stats = refresher.stats
    assert (stats.requested, stats.refreshed, stats.skipped, stats.failed, stats.timed_out) == (5, 5, 0, 0, 0)
    assert refresher.last_error is None and stats.last_latency_s > 0


ASYNC_COMPUTE_DELAY_S = 0.3


def test_asynchronous_refresh_only_on_multiples_of_n_and_notify_never_blocks(embedded):
    compute, _ = embedded_compute(embedded, delay_s=ASYNC_COMPUTE_DELAY_S)
    every = 3
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=every), Prior.identity(NUM_ATOMS))
    durations_while_busy = []
    observed = set()
    with refresher:
        deadline = time.monotonic() + 60.0
        for frame in itertools.cycle(frames(10)):
            busy = refresher.stats.in_flight_s is not None
            started = time.perf_counter()
            refresher.notify_frame(frame)
            if busy:
                durations_while_busy.append(time.perf_counter() - started)
            observed.add(version_and_frame(refresher.current))
            time.sleep(0.02)
            enough = refresher.frame_count >= 30 and refresher.stats.refreshed >= 2
            if enough or time.monotonic() > deadline:
                break
        assert refresher.wait_idle(timeout_s=10.0)
        observed.add(version_and_frame(refresher.current))
    stats = refresher.stats
    assert stats.requested == -(-refresher.frame_count // every)
    assert stats.refreshed >= 2 and stats.skipped >= 1
    assert stats.requested == stats.refreshed + stats.skipped + stats.failed + stats.timed_out
    assert all(frame_index % every == 0 for version, frame_index in observed if version > 0)
    assert len(durations_while_busy) >= 10
    # Waiting for the computation would take at least ASYNC_COMPUTE_DELAY_S; allow for OS scheduling noise.
    longest = max(durations_while_busy)
    assert longest < ASYNC_COMPUTE_DELAY_S / 3, f"notify_frame blocked for {longest:.3f} s"


def test_concurrent_readers_always_see_one_whole_prior(embedded):
    compute, produced = embedded_compute(embedded)
    every = 2
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=every), Prior.identity(NUM_ATOMS))
    problems: list[str] = []
    reads = [0]
    done = threading.Event()

    def read_until_done():
        last_version = 0
        while not done.is_set():
            prior = refresher.current
            reads[0] += 1
            if prior.version < last_version:
                problems.append(f"version went back from {last_version} to {prior.version}")
            last_version = prior.version
            if prior.version == 0:
                if not (np.all(prior.gamma == 1.0) and not prior.beta.any()):
                    problems.append("version 0 is not identity")
                time.sleep(READER_PAUSE_S)
                continue
            made = produced[prior.source_text]
            if not (np.array_equal(prior.gamma, made.gamma) and np.array_equal(prior.beta, made.beta)):
                problems.append(f"version {prior.version}: gamma/beta do not belong to its source text")
            if prior.frame_index % every:
                problems.append(f"version {prior.version} computed at frame {prior.frame_index}")
            if prior.gamma.flags.writeable or prior.beta.flags.writeable:
                problems.append("prior arrays are writable")
            time.sleep(READER_PAUSE_S)

    readers = [threading.Thread(target=read_until_done) for _ in range(3)]
    for reader in readers:
        reader.start()
    with refresher:
        deadline = time.monotonic() + 60.0
        for frame in itertools.cycle(frames(8)):
            refresher.notify_frame(frame)
            time.sleep(0.01)
            if refresher.stats.refreshed >= 4 or time.monotonic() > deadline:
                break
        refresher.wait_idle(timeout_s=10.0)
    done.set()
    for reader in readers:
        reader.join()
    assert not problems, problems[:5]
    assert refresher.stats.refreshed >= 4 and reads[0] > 100


def failing_on_calls(compute, failing_calls: set[int], failure):
    """Wrap a real compute so the given calls (1-based) fail with ``failure(frame)`` instead."""
    calls = [0]

    def compute_or_fail(frame):
        calls[0] += 1
        if calls[0] in failing_calls:
            return failure(frame)
        return compute(frame)

    return compute_or_fail


def test_failed_refresh_keeps_last_good_prior_and_reports_error(embedded):
    compute, _ = embedded_compute(embedded)

    def raise_model_error(frame):
        raise RuntimeError("vision-language model crashed")

    refresher = PriorRefresher(
        failing_on_calls(compute, {2}, raise_model_error), RefreshConfig(every_n_frames=1, synchronous=True),
        Prior.identity(NUM_ATOMS),
    )
    first, second, third = frames(3)
    refresher.notify_frame(first)
    good = refresher.current
    refresher.notify_frame(second)
    assert refresher.current is good and good.version == 1
    assert "frame 1" in refresher.last_error and "RuntimeError: vision-language model crashed" in refresher.last_error
    assert refresher.stats.failed == 1
    refresher.notify_frame(third)
    assert refresher.current.version == 2 and refresher.last_error is None


def test_unusable_result_is_rejected(embedded):
    compute, _ = embedded_compute(embedded)
    refresher = PriorRefresher(
        failing_on_calls(compute, {1}, lambda frame: Prior.identity(NUM_ATOMS // 2)),
        RefreshConfig(every_n_frames=1, synchronous=True), Prior.identity(NUM_ATOMS),
    )
    refresher.notify_frame(scene(9))
    assert refresher.current.version == 0
    assert "32 FiLM values, expected 64" in refresher.last_error


#: Longer than any normal embedded compute, even on a loaded 2-core machine (seen: up to 1.4 s).
SLOW_COMPUTE_S = 3.5


def test_timed_out_refresh_is_discarded_synchronous(embedded):
    compute, produced = embedded_compute(embedded)

    def slow(frame):
        time.sleep(SLOW_COMPUTE_S)
        return compute(frame)

    refresher = PriorRefresher(
        failing_on_calls(compute, {2}, slow),
        RefreshConfig(every_n_frames=1, timeout_s=SLOW_COMPUTE_S - 0.5, synchronous=True),
        Prior.identity(NUM_ATOMS),
    )
    first, late, third = frames(3)
    refresher.notify_frame(first)
    good = refresher.current
    refresher.notify_frame(late)
    assert refresher.current is good
    assert "timeout" in refresher.last_error and refresher.stats.timed_out == 1
    late_text = embedded.encode(late, stand_in_pseudo_ir(late)).text
    assert late_text in produced and refresher.current.source_text != late_text
    refresher.notify_frame(third)
    assert refresher.current.version == 2 and refresher.current.frame_index == 2


def test_timed_out_refresh_is_discarded_asynchronous(embedded):
    compute, _ = embedded_compute(embedded, delay_s=0.4)
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=1, timeout_s=0.1), Prior.identity(NUM_ATOMS))
    with refresher:
        refresher.notify_frame(scene(10))
        time.sleep(0.2)
        assert refresher.stats.in_flight_s is not None
        assert refresher.wait_idle(timeout_s=10.0)
    assert refresher.current.version == 0 and np.all(refresher.current.gamma == 1.0)
    assert refresher.stats.timed_out == 1 and "timeout" in refresher.last_error


def refresher_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WORKER_THREAD_NAME]


def test_stop_leaves_no_thread_behind(embedded):
    compute, _ = embedded_compute(embedded)
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=2), Prior.identity(NUM_ATOMS))
    refresher.start()
    assert len(refresher_threads()) == 1
    for frame in frames(6):
        refresher.notify_frame(frame)
    assert refresher.stop(timeout_s=10.0)
    assert not refresher_threads()
    version = refresher.current.version
    refresher.notify_frame(scene(11))
    refresher.notify_frame(scene(12))
    time.sleep(0.1)
    assert refresher.current.version == version and not refresher_threads()
    stats = refresher.stats
    assert stats.requested == stats.refreshed + stats.skipped + stats.failed + stats.timed_out


def test_stop_during_a_long_compute_reports_it_and_the_thread_still_ends(embedded):
    compute, _ = embedded_compute(embedded, delay_s=0.5)
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=1), Prior.identity(NUM_ATOMS))
    refresher.start()
    refresher.notify_frame(scene(13))
    time.sleep(0.1)
    assert refresher.stop(timeout_s=0.05) is False
    assert refresher.stop(timeout_s=10.0) is True
    assert not refresher_threads()


def test_refresher_restarts_after_stop(embedded):
    compute, _ = embedded_compute(embedded)
    refresher = PriorRefresher(compute, RefreshConfig(every_n_frames=1), Prior.identity(NUM_ATOMS))
    first, second = frames(2)
    for frame in (first, second):
        refresher.start()
        refresher.notify_frame(frame)
        assert refresher.wait_idle(timeout_s=10.0)
        assert refresher.stop(timeout_s=10.0) and not refresher_threads()
    assert refresher.current.version == 2 and refresher.current.frame_index == 1


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="the idle scheduling class is a Linux feature")
def test_an_idle_refresh_thread_runs_in_the_idle_class_and_synchronous_refreshes_do_not():
    """With ``worker_idle`` the refresh gets only CPU the image path leaves; an inline refresh keeps its caller's."""
    caller = os.sched_getscheduler(0)
    seen: list[int] = []

    def compute(frame: np.ndarray) -> Prior:
        seen.append(os.sched_getscheduler(threading.get_native_id()))
        return Prior.identity(NUM_ATOMS)

    with PriorRefresher(compute, RefreshConfig(every_n_frames=1, worker_idle=True), Prior.identity(NUM_ATOMS)) as live:
        live.notify_frame(scene(1))
        assert live.wait_idle(5.0)
    PriorRefresher(compute, RefreshConfig(every_n_frames=1, synchronous=True, worker_idle=True),
                   Prior.identity(NUM_ATOMS)).notify_frame(scene(2))
    assert seen == [os.SCHED_IDLE, caller]
    assert os.sched_getscheduler(0) == caller


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread niceness is a POSIX (Linux) feature")
def test_the_refresh_thread_runs_at_a_lower_priority_and_synchronous_refreshes_do_not():
    """The image path must win the CPU from a refresh; an inline (offline) refresh must not slow its caller."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def compute(frame: np.ndarray) -> Prior:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return Prior.identity(NUM_ATOMS)

    with PriorRefresher(compute, RefreshConfig(every_n_frames=1, worker_niceness=5), Prior.identity(NUM_ATOMS)) as live:
        live.notify_frame(scene(1))
        assert live.wait_idle(5.0)
    inline = PriorRefresher(compute, RefreshConfig(every_n_frames=1, synchronous=True, worker_niceness=5),
                            Prior.identity(NUM_ATOMS))
    inline.notify_frame(scene(2))
    assert seen == [min(base + 5, 19), base]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
