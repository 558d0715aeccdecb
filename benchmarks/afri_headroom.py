"""How much the AFRI fusion targets ask of the gate: is max(Y_vis, pseudo-IR) any different from Y_vis?

AFRI trains the RFN gate towards max(Y_vis, I_pir) (intensity) and max(|∇Y_vis|, |∇I_pir|) (gradient). When the
pseudo-IR is darker and smoother than the visible image nearly everywhere, those targets *are* the visible image
and the gate rightly closes. This measures that headroom per dataset for DCMIF checkpoints, next to what the real
infrared would offer, and how much warmer the warm regions are in the pseudo-IR than in the real IR. It also
scores the pixel-wise rule max(Y_vis, X) itself, and the checkpoint's fused output, on the acceptance metrics (AG,
EN, SF, EI, MI with the real IR) as changes from the visible image: if even that rule cannot beat the visible image
with X = pseudo-IR, no gate over the same pseudo-IR will.

    D=../shared/data
    python benchmarks/afri_headroom.py models/dcmif_tiny.pt [MORE.pt ...] --data $D/msrs_fullres \
        $D/roadscene_train $D/llvip_train --out benchmarks/results/afri_headroom

``results/afri_headroom_no_prior.md`` compares the shipped model with an AFRI gate trained on the first-pass
(identity FiLM) pseudo-IR, from the shipped run's JSRL and VGII (``runs/tiny``, copied to ``runs/afri_none2``):

    dcmif train afri --data $D/msrs_train_128 $D/msrs_fullres $D/roadscene_train --out runs/afri_none2 \
        --model tiny --steps 1500 --batch-size 8 --crop 128 --lr 2e-3 --val-every 500 --val-images 8 \
        --checkpoint-every 250 --prior none --afri-target pseudo_ir --ship runs/afri_none2/dcmif_tiny_afri_no_prior.pt
    python benchmarks/afri_headroom.py models/dcmif_tiny.pt runs/afri_none2/dcmif_tiny_afri_no_prior.pt \
        --prior none --data $D/msrs_fullres $D/roadscene_train $D/llvip_train \
        --out benchmarks/results/afri_headroom_no_prior

``results/afri_headroom_deep_rin*.md`` compare the same with a four-level RIN (``runs/tiny3``: the shipped VGII
and AFRI commands with ``--out runs/tiny3`` on a copy of ``runs/tiny/jsrl``, the ``tiny`` preset of commit
e098f90, shipped to ``runs/tiny3/dcmif_tiny.pt``; without the prior, AFRI on a copy of it in
``runs/tiny3_noprior``), run as above with ``runs/tiny/shipped_two_level_rin.pt`` (a copy of the shipped
``models/dcmif_tiny.pt``) and ``runs/afri_none2/dcmif_tiny_afri_no_prior.pt`` beside them. docs/model.md
("RIN depth") reads them. ``results/afri_headroom_long_rin.md`` does the same for ``runs/rinL`` (the four-level
RIN after 12000 VGII steps without the prior, see ``first_pass_pseudo_ir.py``) with AFRI trained as for
``afri_none2`` (``--out runs/rinL ... --ship runs/rinL/dcmif_rinL_no_prior.pt``, the same edited preset):

    python benchmarks/afri_headroom.py runs/afri_none2/dcmif_tiny_afri_no_prior.pt runs/rinL/dcmif_rinL_no_prior.pt \
        --prior none --data $D/msrs_fullres $D/roadscene_train $D/llvip_train \
        --out benchmarks/results/afri_headroom_long_rin
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dcmif_ros.evaluation import metrics
from dcmif_ros.inference.checkpoint import load_bundle
from dcmif_ros.image_codec import to_uint8
from dcmif_ros.prior import make_prior_encoder
from dcmif_ros.training.data import collect_pairs
from dcmif_ros.training.losses import sobel_magnitude
from dcmif_ros.training.stages import load_full_pair, psnr, review_first_pass, warm_contrast

BRIGHTER_BY = 2 / 255  # a pseudo-IR pixel "beats" the visible one when it is brighter by two grey levels
RULE_METRICS = {"AG": metrics.average_gradient, "EN": metrics.entropy, "SF": metrics.spatial_frequency,
                "EI": metrics.edge_intensity}


def gains_over_visible(visible: np.ndarray, candidate: np.ndarray, infrared: np.ndarray,
                       label: str) -> dict[str, float]:
    """Metric of ``candidate`` minus the same metric of Y_vis (all on 8-bit grey)."""
    base, image, ir = to_uint8(visible), to_uint8(candidate), to_uint8(infrared)
    gains = {f"{label}_{name}": metric(image) - metric(base) for name, metric in RULE_METRICS.items()}
    gains[f"{label}_MI(IR,F)"] = metrics.mutual_information_with(ir, image) - metrics.mutual_information_with(ir, base)
    return gains


@torch.no_grad()
def measure_pair(bundle, encoder, pair) -> dict[str, float]:
    net = bundle.net
    vis, ir = load_full_pair(pair, net.config.pad_multiple, "cpu")
    gamma, beta = net.identity_film()
    if encoder is not None:  # the product path: the prior reviews the first-pass pseudo-IR
        gamma, beta = bundle.film(torch.from_numpy(review_first_pass(net, encoder, vis, pair.visible_path))[None])
    out = net.infer(vis, gamma, beta)
    pseudo = out.pseudo_ir.clamp(0, 1)
    headroom = lambda other: float((torch.maximum(vis, other) - vis).mean())
    gradient_headroom = lambda other: float(
        (torch.maximum(sobel_magnitude(vis), sobel_magnitude(other)) - sobel_magnitude(vis)).mean())
    v, p, i = (t[0, 0].numpy() for t in (vis, pseudo, ir))
    return {
        "pseudo_ir_psnr": psnr(pseudo, ir),
        "warm_contrast_pseudo_ir": warm_contrast(pseudo, ir),
        "warm_contrast_real_ir": warm_contrast(ir, ir),
        "pixels_pseudo_ir_brighter": float(np.mean(p > v + BRIGHTER_BY)),
        "intensity_headroom_pseudo_ir": headroom(pseudo),
        "intensity_headroom_real_ir": headroom(ir),
        "gradient_headroom_pseudo_ir": gradient_headroom(pseudo),
        "gradient_headroom_real_ir": gradient_headroom(ir),
        "gate_mean": float(out.gate.mean()),
        **gains_over_visible(v, np.maximum(v, p), i, "rule_pseudo_ir"),
        **gains_over_visible(v, np.maximum(v, i), i, "rule_real_ir"),
        **gains_over_visible(v, out.fused.clamp(0, 1)[0, 0].numpy(), i, "fused"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--pairs", type=int, default=0, help="validation pairs per dataset (0: all)")
    parser.add_argument("--prior", default="embedded", help="prior backend, as for dcmif fuse")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = make_prior_encoder(args.prior)
    encoder = None if getattr(encoder, "is_identity", False) else encoder
    results = {}
    for checkpoint in args.checkpoints:
        bundle = load_bundle(checkpoint)
        for root in args.data:
            pairs = collect_pairs([root], "val")
            pairs = pairs[: args.pairs] if args.pairs else pairs
            rows = [measure_pair(bundle, encoder, pair) for pair in pairs]
            means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
            results.setdefault(str(checkpoint), {})[Path(root).name] = {"pairs": len(rows), **means}
            print(checkpoint, Path(root).name, means, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"prior": args.prior, "results": results}, indent=1))
    keys = list(next(iter(next(iter(results.values())).values())))
    headroom_keys = [k for k in keys if not k.startswith(("rule_", "fused_"))]
    rule_keys = ["pairs"] + [k for k in keys if k.startswith(("rule_", "fused_"))]
    lines = [f"# AFRI target headroom ({args.prior} prior; validation pairs)", "",
             "Intensity headroom: mean of max(Y_vis, X) − Y_vis on [0, 1]; gradient headroom: the same on Sobel "
             "magnitudes (|Gx| + |Gy|). Warm contrast: mean over the hottest 10 % of the real infrared minus the "
             "mean elsewhere. `pixels_pseudo_ir_brighter`: share of pixels where the pseudo-IR exceeds Y_vis by 2 "
             "grey levels.", ""]
    lines += table(results, headroom_keys)
    lines += ["", "## The rule max(Y_vis, X) and the fused output against the visible image", "",
              "Metric of max(Y_vis, X) (X = pseudo-IR or real IR), and of the checkpoint's fused output, minus the "
              "same metric of Y_vis (8-bit grey; MI with the real IR in bits). Positive: better than the visible "
              "image.", ""]
    lines += table(results, rule_keys)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def table(results: dict, keys: list[str]) -> list[str]:
    lines = ["| checkpoint | dataset | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for checkpoint, per_data in results.items():
        for data, row in per_data.items():
            lines.append(f"| {checkpoint} | {data} | " + " | ".join(str(row[k]) for k in keys) + " |")
    return lines


if __name__ == "__main__":
    main()
