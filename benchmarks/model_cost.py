"""Parameters and FLOPs of every DCMIF stage for each preset, at 640×480 (the committed cost benchmark).

FLOPs are counted by ``torch.utils.flop_counter`` (convolutions and matrix products, 2 FLOPs per
multiply-add), on the per-frame inference graph. The second RIN pass of DCMIF runs only when the prior
refreshes, so it is listed separately. REN's solve kernel runs on 4×4 pixel blocks and is counted as the dense
block convolution onnxruntime executes (zeros of the block layout included).

    python benchmarks/model_cost.py --out benchmarks/results/model_cost.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcmif_ros.models import JSRL, FiLMHeads, get_config
from dcmif_ros.models.dcmif import DCMIFNet, OffsetGate, dcmif_from_jsrl
from dcmif_ros.models.dictionary import frozen_derived_weights, synthesize, synthesize_field
from dcmif_ros.prior import MINILM_FEATURE_DIM

HEIGHT, WIDTH = 480, 640


def gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return round(counter.get_total_flops() / 1e9, 3)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gate_and_tail(net: DCMIFNet, coefficients: torch.Tensor) -> dict[str, float]:
    """The gate's and the syntheses' GFLOPs: the paper's RFN over two full-resolution coefficient maps and two
    full syntheses, or warmth fusion's gate over RIN's features, the pseudo-IR's one full synthesis and the two
    field syntheses beside it (the fused image takes Y itself for the visible coefficients' synthesis)."""
    synthesis = gflops(lambda: synthesize(coefficients, net.dictionary))
    if not isinstance(net.rfn, OffsetGate):
        return {"RFN": gflops(lambda: net.rfn(coefficients, coefficients)), "TailNet x2": 2 * synthesis}
    stride, config = net.rin.stride, net.config
    features = torch.rand(1, config.rin.width, HEIGHT // stride, WIDTH // stride)
    field = torch.rand(1, config.atoms, HEIGHT // stride, WIDTH // stride)
    return {"RFN (warmth gate on RIN's features)": gflops(lambda: net.rfn(features)),
            "TailNet (and two field syntheses)": synthesis + 2 * gflops(
                lambda: synthesize_field(field, net.field_weight()))}


def measure(size: str) -> dict:
    torch.manual_seed(0)
    config = get_config(size)
    jsrl = JSRL(config)
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach()).eval()
    film = FiLMHeads(MINILM_FEATURE_DIM, config.atoms)
    image = torch.rand(1, 1, HEIGHT, WIDTH)
    coefficients = torch.rand(1, config.atoms, HEIGHT, WIDTH)
    ren = net.ren
    # frozen as the export freezes it: REN's solve kernel is a constant of the graph, not derived per frame
    with frozen_derived_weights(net):
        stages = {
            "REN solve (HeadNet and CSB, folded)": gflops(lambda: ren.solve(image)),
            "REN CoeNet": gflops(lambda: ren.coenet(coefficients, ren.prox_weight)),
            "RIN (with its semantic branch)": gflops(lambda: net.rin(coefficients, image)),
            "semantic branch (part of RIN)": gflops(lambda: net.rin.guide(image)) if net.rin.semantic else 0.0,
            **gate_and_tail(net, coefficients),
        }
        per_frame = gflops(lambda: net(image, *net.identity_film()))
    return {
        "atoms": config.atoms,
        "parameters": {"REN": parameters(net.ren), "RIN": parameters(net.rin),
                       "semantic branch (part of RIN)": parameters(net.rin.semantic) if net.rin.semantic else 0, "RFN": parameters(net.rfn),
                       "FiLM heads": parameters(film), "dictionary": net.dictionary.numel(),
                       "total (inference)": parameters(net) + parameters(film) + net.dictionary.numel(),
                       "JSRL (training only)": parameters(jsrl)},
        "gflops_640x480": {**stages, "per-frame graph": per_frame, "extra RIN pass on a prior refresh":
                           stages["RIN (with its semantic branch)"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--out", default="benchmarks/results/model_cost.json")
    args = parser.parse_args()
    results = {size: measure(size) for size in args.sizes}
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/model_cost.py", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
