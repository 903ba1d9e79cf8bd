r"""Measures what the generator options do on the quickstart (mnist5k, CNN, vaeacgan, 2 CPU cores).

  python bench/generator_quality.py [--variants=paper,fresh_pool500,default,...]
      [--seed=0] [--workdir=DIR]

(every name of VARIANTS below; `default`, the shipped defaults, computes what
`carry_fresh300_top50_every8` computes)

Runs `python -m tf_bgadl.train --flagfile=quickstart.flags` once per variant into a temporary
folder (or --workdir) and prints, per variant: the largest `reconstruction_error` over the
iterations (target <= 5.0), the smallest `score_generated / score_acquired` from iteration 2 on
(target >= 0.5: Proposition 2.1 observed), the final test accuracy and the wall time. The
variants differ only in the generator flags named in VARIANTS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _fresh(pool_steps: int) -> list[str]:
    """A fresh VAE-ACGAN every iteration, `pool_steps` pool steps each time, e/g/d every step."""
    return ["--kl_weight=0.01", "--nogan_carry_over", f"--gan_pool_steps={pool_steps}",
            "--gan_update_every=1"]


def _carried(fresh: int, top: int, every: int) -> list[str]:
    """e, g, d carried over: `fresh` pool steps once (after iteration 0), `top` per later
    iteration, e, g, d on every `every`-th joint step."""
    return ["--kl_weight=0.01", "--gan_carry_over", f"--gan_pool_steps={top}",
            f"--gan_pool_steps_fresh={fresh}", f"--gan_update_every={every}"]


# Flags of each variant on top of quickstart.flags ("paper": the authors' generator schedule,
# a fresh VAE-ACGAN every iteration trained only in the joint fit).
VARIANTS = {
    "paper": ["--kl_weight=1.0", "--nogan_carry_over", "--gan_pool_steps=0",
              "--gan_update_every=1"],
    "fresh_pool500": _fresh(500),
    "fresh_pool1k": _fresh(1000),  # the defaults until issue 13
    "fresh_pool2k": _fresh(2000),
    "fresh_pool3k": _fresh(3000),
    # Issue 13's first carried-over schedules: 1,000 fresh steps, then 200 or 100.
    "carry_top200": _carried(1000, 200, 1),
    "carry_top100": _carried(1000, 100, 1),
    "carry_top200_every4": _carried(1000, 200, 4),
    "carry_top100_every4": _carried(1000, 100, 4),
    "carry_top100_every8": _carried(1000, 100, 8),
    # Cheaper ones: carry_fresh300_top50_every8 is the default since.
    **{f"carry_fresh{fresh}_top{top}_every{every}": _carried(fresh, top, every)
       for fresh, top, every in ((300, 50, 8), (300, 100, 8), (200, 50, 8), (500, 50, 8),
                                 (300, 50, 4), (300, 50, 16))},
    "default": [],  # whatever the shipped quickstart.flags and flag defaults say
}


def run_variant(name: str, workdir: str, seed: int) -> dict:
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "tf_bgadl.train", "--flagfile=quickstart.flags",
         f"--workdir={workdir}", f"--seed={seed}", *VARIANTS[name]],
        capture_output=True, text=True, check=False)
    seconds = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "results.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    generative = [r for r in rows if r.get("reconstruction_error") is not None]
    ratios = [r["score_generated"] / r["score_acquired"] for r in generative
              if r["iteration"] >= 2 and r["score_acquired"] > 0]
    return {"variant": name, "max_reconstruction_error": max(
                r["reconstruction_error"] for r in generative),
            "reconstruction_errors": [round(r["reconstruction_error"], 2) for r in generative],
            "min_ratio_from_iteration_2": min(ratios) if ratios else None,
            "ratios": [round(x, 2) for x in ratios],
            "final_test_accuracy": rows[-1]["test_accuracy"], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="paper,default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    base = args.workdir or tempfile.mkdtemp(prefix="generator_quality_")
    print(f"{'variant':<12} {'max rec':>8} {'min ratio':>9} {'accuracy':>8} {'seconds':>8}  "
          "reconstruction errors | ratios (iteration >= 2)", flush=True)
    for name in names:
        r = run_variant(name, os.path.join(base, f"{name}_seed{args.seed}"), args.seed)
        ratio = "-" if r["min_ratio_from_iteration_2"] is None else \
            f"{r['min_ratio_from_iteration_2']:.2f}"
        print(f"{name:<12} {r['max_reconstruction_error']:8.2f} {ratio:>9} "
              f"{100 * r['final_test_accuracy']:7.1f}% {r['seconds']:8.1f}  "
              f"{r['reconstruction_errors']} | {r['ratios']}", flush=True)


if __name__ == "__main__":
    main()
