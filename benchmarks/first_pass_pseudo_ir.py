"""How close a VGII run's first-pass pseudo-IR (identity FiLM, no prior) is to the real infrared, at native scale.

Compares RIN architectures and training data: PSNR and L1 against the real infrared, and the warm contrast
(mean over the real infrared's hottest 10 % minus the mean elsewhere; the real infrared's own value is the
target), on the first validation pairs of each dataset at their native resolution (training's own validation
mixes in the 128×128 squashed MSRS frames).

Runs in ``results/first_pass_pseudo_ir.md`` (docs/model.md, "RIN depth"), each on a copy of the shipped
``runs/tiny/jsrl``: ``runs/tiny`` is the shipped model's VGII (two-level RIN, 5000 steps with the prior),
``runs/tiny3`` the same with a four-level RIN (the ``tiny`` preset of commit e098f90); ``rinA``/``rinB``
(seed 0) and ``rinA1``/``rinB1`` (``--seed 1``) are two-level/four-level RINs trained for 3000 steps with
``--prior none``, and ``rinE`` (``--crop-scales 0.25 1``) and ``rinF`` (msrs_fullres and roadscene_train only,
``--crop 160 --batch-size 6``, msrs_fullres listed first as for ``rinE``) four-level ones. They were made
before VGII took its shapes from ``--model``: each run's ``jsrl/final.pt`` is ``runs/tiny/jsrl``'s with its
recorded ``model_config.rin`` set to the four-level RIN (today: ``--model tiny`` at commit e098f90), and
with a backbone that initialised its levels before its entry (same seeds, other initial weights than today's
code). ``rinL`` is the four-level RIN trained four times as long (``--steps 12000 --crop-scales 0.25 1 --val-every
1500``), made with VGII's ``--model`` check in place: ``--model tiny`` at commit a4ebb9b with the preset's ``rin``
edited to ``BackboneConfig(width=24, blocks_per_level=(1, 2, 2, 2))`` (its VGII output records that config). The
rest as the shipped VGII command:

    dcmif train vgii --data $D/msrs_train_128 $D/msrs_fullres $D/roadscene_train --out runs/rinB --model tiny \
        --steps 3000 --batch-size 8 --crop 128 --lr 2e-3 --val-every 500 --val-images 12 --prior none

    D=../shared/data
    python benchmarks/first_pass_pseudo_ir.py runs/tiny runs/tiny3 runs/rinA runs/rinB runs/rinA1 runs/rinB1 \
        runs/rinE runs/rinF runs/rinL --data $D/msrs_fullres $D/roadscene_train $D/llvip_train \
        --out benchmarks/results/first_pass_pseudo_ir
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dcmif_ros.training.data import collect_pairs
from dcmif_ros.training.stages import load_full_pair, psnr, vgii_from_run, warm_contrast

COLUMNS = ("psnr", "l1", "warm_contrast", "warm_contrast_real_ir")


@torch.no_grad()
def measure(net, root: str, pairs: int) -> dict[str, float]:
    rows = []
    for pair in collect_pairs([root], "val")[:pairs]:
        vis, ir = load_full_pair(pair, net.config.pad_multiple, "cpu")
        pseudo = net.infer(vis, *net.identity_film()).pseudo_ir.clamp(0, 1)
        rows.append((psnr(pseudo, ir), float((pseudo - ir).abs().mean()), warm_contrast(pseudo, ir),
                     warm_contrast(ir, ir)))
    return {"pairs": len(rows), **{k: round(float(v), 4) for k, v in zip(COLUMNS, np.mean(rows, axis=0))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with jsrl/ and vgii/ final.pt")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--pairs", type=int, default=24, help="validation pairs per dataset")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for run in args.runs:
        net = vgii_from_run(run)[0].eval()
        results[str(run)] = {Path(root).name: measure(net, root, args.pairs) for root in args.data}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = ["# First-pass pseudo-IR against the real infrared (native resolution, identity FiLM)", "",
             "| run | dataset | pairs | PSNR dB ↑ | L1 ↓ | warm contrast ↑ | real IR's warm contrast |",
             "|---|---|---|---|---|---|---|"]
    for run, per_data in results.items():
        for name, r in per_data.items():
            lines.append(f"| {run} | {name} | {r['pairs']} | " + " | ".join(str(r[k]) for k in COLUMNS) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
