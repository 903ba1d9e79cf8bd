r"""SavedModel export of a run's classifier for TF Serving: classify and BALD-score images.

  python -m tf_bgadl.export --workdir=runs/quickstart --export_base=/models [--mc_samples=20]

writes `<export_base>/<model_name>/<version>/` (numeric version, the next free one), built in a
hidden temporary folder and renamed when complete, so a polling server never sees half a model.

Signatures (inputs named, outputs dicts, batch dimension None, no XLA):
  serving_default  images float32 [None, H, W, C] in [0, 1] -> probabilities [None, K],
                   classes int64 [None]; deterministic (dropout off, BatchNorm in inference mode).
  bald             images -> bald, predictive_entropy, expected_entropy, variation_ratio [None],
                   mean_probabilities [None, K]; T MC-dropout samples fixed at export, fresh
                   random masks at every call (also after every reload).
  bald_seeded      images, seed int32 [None, 2] (one stateless seed per image, batch-major) ->
                   the same outputs; row i depends only on image i and seed i (not on the
                   batch, its position or the other rows), so it is reproducible and safe
                   under TF Serving's server-side batching and REST row-format requests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from absl import flags

from tf_bgadl import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder written by tf_bgadl.train.")
_EXPORT_BASE = flags.DEFINE_string("export_base", None, "TF Serving model base folder.")
_MODEL_NAME = flags.DEFINE_string("model_name", "tf_bgadl", "Model name (folder under "
                                  "--export_base, the name clients ask TF Serving for).")
_MC_SAMPLES = flags.DEFINE_integer("mc_samples", None, "MC-dropout samples T of the `bald` "
                                   "signatures (default: the run's --mc_samples).")


def main(argv):
    del argv
    if not _WORKDIR.value or not _EXPORT_BASE.value:
        sys.exit("error: --workdir and --export_base are required")
    from tf_bgadl import serving_export  # pylint: disable=import-outside-toplevel
    try:
        path = serving_export.export_run(_WORKDIR.value, _EXPORT_BASE.value,
                                         model_name=_MODEL_NAME.value,
                                         mc_samples=_MC_SAMPLES.value)
    except serving_export.ExportError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({"exported": path}))


if __name__ == "__main__":
    cli.run(main)
