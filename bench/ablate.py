"""Proxy-model ablation: runs (or resumes) an ablation and reports its effects with their intervals.

    .venv/bin/python -m bench.ablate                                   # conf/ablate/demo.yaml on demo_out/
    .venv/bin/python -m bench.ablate --config conf/ablate/demo.yaml --seeds '[1]' --out /tmp/ablate-1seed

Everything after the script's own flags goes to `python -m trainer.ablate`. A finished ablation is resumed, not
retrained (its stages and evaluations are cached in `out`), so this prints the stored effects at once; `train_s` and
`eval_s` are the summed times of every stage and evaluation whenever they ran, `wall_s` this invocation's.
The speed figure is a ratio measured in the same run: trainings with shared prefixes over trainings without.
Ends with one line `RESULT {json}`: per variant and benchmark the mean and standard deviation of bits per byte over
seeds, `p2_vs_random_bpb_delta` / `p2_vs_random_ci95` (the annotator's phase 2 minus the random-selection control,
paired by seed, 95% Student-t interval; negative = the annotator's selection is better), every declared
comparison, the Figure-2 rank correlation, each selection's tokens against its control's (`control_tokens`), and
the times.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    from trainer.ablate.run import main as ablate

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", "conf/ablate/demo.yaml", *argv]
    t0 = time.monotonic()
    out = ablate(argv)
    wall = time.monotonic() - t0
    result = {
        "ablation": out["ablation"], "seeds": out["seeds"], "budget_tokens": out["budget_tokens"],
        "bpb": {v: {k: {"mean": round(s["mean"], 5), "std": round(s["std"], 5)} for k, s in per.items()}
                for v, per in out["variants"].items()},
        "p2_vs_random_bpb_delta": out.get("p2_vs_random_bpb_delta"),
        "p2_vs_random_ci95": out.get("p2_vs_random_ci95"),
        "comparisons": {name: {k: {"delta": round(d["delta"], 5), "ci95": [round(x, 5) for x in d["ci95"]],
                                   "seeds_to_resolve": d["seeds_to_resolve"]} for k, d in per.items()}
                        for name, per in out["comparisons"].items()},
        "figure2_spearman": out["figure2"]["spearman"],
        "control_tokens": {c["selection"]: {"selection": c["selection_tokens"], "control": c["control_tokens"],
                                            "ratio": round(c["ratio"], 4)} for c in out.get("controls", [])},
        "trainings": out["trainings"], "trainings_without_sharing": out["trainings_without_sharing"],
        "sharing_ratio": round(out["trainings"] / out["trainings_without_sharing"], 3),
        "train_s": out["train_s"], "eval_s": out["eval_s"], "data_s": out["data_s"], "wall_s": round(wall, 1),
    }
    print("RESULT " + json.dumps(_strict(result), sort_keys=True, allow_nan=False))
    return result


def _strict(value):
    """NaN (an interval from one seed, a correlation of too few points) as null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


if __name__ == "__main__":
    main()
