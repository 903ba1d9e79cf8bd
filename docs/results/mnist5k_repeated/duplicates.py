"""Counts near-duplicate pairs inside each acquired batch of the Repeated-MNIST comparison.

Every mnist5k_repeated training image has two noisy copies elsewhere in the pool; two acquired
images of one batch are counted as copies when their pixel L2 distance is below a threshold
midway between the distance of two copies and the smallest distance between two different
mnist5k digits (printed). Run from the repository root after the study (docs/acquisition.md):

  python docs/results/mnist5k_repeated/duplicates.py --workdir=runs/repeated/compare
"""

import argparse
import json
import os

import numpy as np

from tf_bgadl import data


def _distances(images):
    flat = images.reshape(len(images), -1).astype(np.float64)
    sq = (flat ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="runs/repeated/compare")
    args = parser.parse_args()
    repeated = data.load_dataset("mnist5k_repeated")
    original = data.load_dataset("mnist5k")
    # Copies of one digit lie about 200 apart (two draws of the noise); two different digits
    # at least the smallest distance between two different originals. The threshold is midway
    # between the largest nearest-neighbour distance of 300 repeated images (their copies) and
    # that smallest distance.
    d = _distances(original.x_train)
    np.fill_diagonal(d, np.inf)
    flat = repeated.x_train.reshape(len(repeated.x_train), -1).astype(np.float64)
    sq = (flat ** 2).sum(1)
    nearest = np.sqrt(np.maximum(sq[:300, None] + sq[None, :] - 2 * flat[:300] @ flat.T, 0))
    nearest[np.arange(300), np.arange(300)] = np.inf
    copy_distance = nearest.min(1).max()
    threshold = 0.5 * (copy_distance + d.min())
    print(f"copies: nearest-neighbour distance at most {copy_distance:.0f}; different digits: "
          f"at least {d.min():.0f}; threshold {threshold:.0f} (L2 in grey levels)")
    print("| acquisition | batches | copy pairs per batch (mean over seeds and iterations) | "
          "batches with a copy pair |")
    print("|---|---:|---:|---:|")
    for method in sorted(os.listdir(args.workdir)):
        folder = os.path.join(args.workdir, method)
        if not os.path.isdir(folder):
            continue
        pairs = []
        for seed in sorted(os.listdir(folder)):
            with open(os.path.join(folder, seed, "results.jsonl")) as f:
                for line in f:
                    ids = json.loads(line)["acquired_ids"]
                    if len(ids) > 1:
                        dist = _distances(repeated.x_train[ids])
                        pairs.append(int((dist[np.triu_indices(len(ids), 1)] < threshold).sum()))
        pairs = np.array(pairs)
        print(f"| {method} | {len(pairs)} | {pairs.mean():.2f} | {(pairs > 0).mean():.0%} |")


if __name__ == "__main__":
    main()
