"""Does the unfolded shared-dictionary learner (JSRL) reconstruct better than a plain autoencoder of the same size?

Both models see the same crops, steps, optimiser and L1 loss. The autoencoder has JSRL's encoders (HeadNet +
CoeNet per modality, no coefficient solve, no dictionary step) and a shared learned 5×5 synthesis conv, so the
difference measured is what the unfolded optimisation (exact CSB, DSB, DicNet, HypNet) adds.

    python benchmarks/jsrl_vs_autoencoder.py --data ../shared/data/msrs_fullres --steps 200
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dcmif_ros.models import JSRL, get_config
from dcmif_ros.models.jsrl import MODALITIES, CoeNet, HeadNet
from dcmif_ros.training.data import PairDataset, collect_pairs
from dcmif_ros.training.stages import load_full_pair, psnr


class PlainAutoencoder(nn.Module):
    """JSRL's encoders with a shared linear synthesis layer and nothing else."""

    def __init__(self, config):
        super().__init__()
        self.heads = nn.ModuleDict({m: HeadNet(config.atoms, config.kernel_size) for m in MODALITIES})
        self.coenets = nn.ModuleDict({m: CoeNet(config.atoms, config.coenet) for m in MODALITIES})
        self.decoder = nn.Conv2d(config.atoms, 1, config.kernel_size, padding=config.kernel_size // 2,
                                 padding_mode="circular", bias=False)
        self.register_buffer("unit", torch.tensor(1.0))

    def forward(self, vis, ir):
        codes = {m: self.coenets[m](self.heads[m](x), self.unit) for m, x in (("vis", vis), ("ir", ir))}
        return {"recon_vis": self.decoder(codes["vis"]), "recon_ir": self.decoder(codes["ir"])}


def train(model, dataset, steps, batch_size, lr, seed):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        dataset.set_epoch(step)
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                                 generator=generator):
            out = model(batch["vis"], batch["ir"])
            loss = F.l1_loss(out["recon_vis"], batch["vis"]) + F.l1_loss(out["recon_ir"], batch["ir"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step >= steps:
                break


@torch.no_grad()
def evaluate(model, pairs, multiple):
    model.eval()
    scores = {"vis": [], "ir": []}
    for pair in pairs:
        vis, ir = load_full_pair(pair, multiple, "cpu")
        out = model(vis, ir)
        scores["vis"].append(psnr(out["recon_vis"], vis))
        scores["ir"].append(psnr(out["recon_ir"], ir))
    return {f"psnr_{k}": round(float(np.mean(v)), 2) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-images", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/jsrl_vs_autoencoder.json")
    args = parser.parse_args()
    config = get_config("tiny")
    dataset = PairDataset(collect_pairs(args.data, "train"), args.crop)
    val_pairs = collect_pairs(args.data, "val")[: args.val_images]
    results = {}
    for name, model in (("jsrl", JSRL(config)), ("plain_autoencoder", PlainAutoencoder(config))):
        started = time.monotonic()
        train(model, dataset, args.steps, args.batch_size, args.lr, seed=0)
        results[name] = {**evaluate(model, val_pairs, config.pad_multiple),
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "train_s": round(time.monotonic() - started, 1)}
        print(name, results[name])
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(__import__("sys").argv),
                                          "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
