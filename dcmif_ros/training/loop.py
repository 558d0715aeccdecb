"""The training loop shared by every stage: steps, progress bar, validation, checkpoints, ``--resume``."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dcmif_ros.training.data import PairDataset


@dataclass
class TrainConfig:
    """What ``dcmif train STAGE`` was asked to do (recorded in every checkpoint)."""

    data: list[str]
    out: str = "runs/tiny"
    model: str = "tiny"
    steps: int = 2000
    batch_size: int = 8
    crop: int = 128
    crop_scales: tuple[float, float] = (1.0, 1.0)
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"
    val_every: int = 250
    checkpoint_every: int = 100
    val_images: int = 8
    resume: bool = False
    prior: str = "embedded"
    workers: int = 0
    extra: dict = field(default_factory=dict)


class Stage(Protocol):
    """``trainable`` returns parameters, or parameter groups (dicts with ``params`` and optionally ``lr_scale``,
    a factor on ``--lr``: pretrained layers fine-tune more gently than new ones)."""

    name: str

    def trainable(self) -> list[torch.nn.Parameter] | list[dict]: ...
    def state(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...
    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]: ...
    def validate(self) -> dict[str, float]: ...
    def finalize(self) -> dict: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def infinite_batches(dataset: PairDataset, config: TrainConfig, start_epoch: int):
    """Endless shuffled batches; the shuffle and the crops depend only on (seed, epoch)."""
    epoch = start_epoch
    while True:
        dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                            generator=generator, num_workers=config.workers)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def run_stage(stage: Stage, dataset: PairDataset, config: TrainConfig) -> Path:
    """Train ``stage`` for ``config.steps`` steps; returns the path of its ``final.pt``."""
    stage_dir = Path(config.out) / stage.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    last_path, final_path, log_path = stage_dir / "last.pt", stage_dir / "final.pt", stage_dir / "log.jsonl"
    groups = stage.trainable()
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    optimizer = torch.optim.Adam([{"params": g["params"], "lr": config.lr * g.get("lr_scale", 1.0)} for g in groups],
                                 lr=config.lr)
    params = [p for g in groups for p in g["params"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / max(config.steps, 1))))
    step, epoch = 0, 0
    if config.resume and last_path.exists():
        checkpoint = torch.load(last_path, map_location=config.device, weights_only=False)
        stage.load_state(checkpoint["stage"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        step, epoch = checkpoint["step"], checkpoint["epoch"]
        torch.set_rng_state(checkpoint["torch_rng"])
        if log_path.exists():  # steps logged after this checkpoint are trained again: drop their records
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            log_path.write_text("".join(line + "\n" for line in kept))
        print(f"resumed {stage.name} from {last_path} at step {step}")
    elif not config.resume:
        log_path.unlink(missing_ok=True)

    def save(path: Path, current_epoch: int) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"stage": stage.state(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "step": step, "epoch": current_epoch, "torch_rng": torch.get_rng_state(),
                    "config": asdict(config)}, tmp)
        tmp.replace(path)

    batches = infinite_batches(dataset, config, epoch)
    progress = tqdm(total=config.steps, initial=step, desc=f"train {stage.name}", dynamic_ncols=True)
    started = time.monotonic()
    with log_path.open("a") as log:
        while step < config.steps:
            epoch, batch = next(batches)
            batch = {k: v.to(config.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            losses = stage.losses(batch, step)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            values = {k: round(float(v.detach()), 5) for k, v in losses.items()}
            progress.set_postfix(values)
            progress.update(1)
            record = {"step": step, "epoch": epoch, "lr": schedule.get_last_lr()[0], **values}
            if step % config.val_every == 0 or step == config.steps:
                record["val"] = stage.validate()
                progress.write(f"step {step} validation: {record['val']}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                save(last_path, epoch)
                record["elapsed_s"] = round(time.monotonic() - started, 1)
            log.write(json.dumps(record) + "\n")
            log.flush()
    progress.close()
    summary = stage.finalize()
    torch.save({**summary, "train_config": asdict(config)}, final_path)
    print(f"{stage.name}: wrote {final_path}")
    return final_path
