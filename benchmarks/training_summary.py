"""Summarise a run folder's training logs (``<out>/<stage>/log.jsonl``) as Markdown: steps, losses, validation.

    python benchmarks/training_summary.py runs/tiny --out benchmarks/results/training_tiny.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES = ("jsrl", "vgii", "afri")
LOSS_SAMPLES = 5  # loss rows shown per stage, evenly spaced


def summarize_stage(stage_dir: Path) -> list[str]:
    records = [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    if not records:
        return [f"## {stage_dir.name}", "", "(empty log)"]
    final = json.loads(json.dumps(records[-1]))
    losses = [k for k in records[0] if k not in ("step", "epoch", "lr", "val", "elapsed_s")]
    picks = sorted({round(i * (len(records) - 1) / (LOSS_SAMPLES - 1)) for i in range(LOSS_SAMPLES)})
    lines = [f"## {stage_dir.name}", "", f"{final['step']} steps, final learning rate {final['lr']:.2e}.", "",
             "| step | " + " | ".join(losses) + " |", "|---" * (len(losses) + 1) + "|"]
    lines += [f"| {records[i]['step']} | " + " | ".join(f"{records[i][k]:.4g}" for k in losses) + " |" for i in picks]
    validations = [r for r in records if "val" in r]
    if validations:
        keys = list(validations[0]["val"])
        lines += ["", "Validation:", "", "| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {r['step']} | " + " | ".join(str(r["val"][k]) for k in keys) + " |" for r in validations]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder, e.g. runs/tiny")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lines = [f"# Training log summary: {args.run}", ""]
    for stage in STAGES:
        if (Path(args.run) / stage / "log.jsonl").is_file():
            lines += summarize_stage(Path(args.run) / stage) + [""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
