r"""Ranks unlabeled images by BALD with a TF Serving server and prints the K most informative.

  python -m tf_bgadl.serving.rank --server=http://localhost:8501 --images=pool.npy --top=10
  python -m tf_bgadl.serving.rank --server=localhost:8500 --protocol=grpc --images=dir/ --top=10

`--images` is a .npy array [N, H, W, C] (uint8 0-255 or float 0-1) or a folder of image files
(PNG/JPEG, read with Pillow; grayscale when --channels=1).
"""

from __future__ import annotations

import sys

from absl import flags

from tf_bgadl import cli

_SERVER = flags.DEFINE_string("server", "http://localhost:8501", "TF Serving address (REST "
                              "http://host:8501, gRPC host:8500).")
_PROTOCOL = flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "API to use.")
_MODEL_NAME = flags.DEFINE_string("model_name", "tf_bgadl", "Served model name.")
_IMAGES = flags.DEFINE_string("images", None, ".npy file or folder of images.")
_TOP = flags.DEFINE_integer("top", 10, "How many of the most informative images to print.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per request.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Channels when reading image files (1 or 3).")
_SEED = flags.DEFINE_integer("seed", None, "Use the `bald_seeded` signature: image i (0-based, "
                             "in --images' order) gets a seed derived from (this seed, i), so "
                             "the same images and seed give the same scores whatever "
                             "--batch_size (reproducible scores).",
                             lower_bound=-2**31, upper_bound=2**31 - 1)
flags.mark_flag_as_required("images")


def main(argv):
    del argv
    from tf_bgadl.serving import client as client_lib  # pylint: disable=import-outside-toplevel
    from tf_bgadl.serving.ranking import load_images, rank  # pylint: disable=import-outside-toplevel
    try:
        names, images = load_images(_IMAGES.value, _CHANNELS.value)
        if _PROTOCOL.value == "rest":
            client = client_lib.RestClient(_SERVER.value, _MODEL_NAME.value)
        else:
            client = client_lib.GrpcClient(_SERVER.value, _MODEL_NAME.value)
        rows = rank(client, names, images, top=_TOP.value, batch_size=_BATCH.value,
                    seed=_SEED.value)
    except (ValueError, client_lib.ServingError) as e:
        sys.exit(f"error: {e}")
    print(f"{'rank':>4}  {'bald':>8}  {'class':>5}  image")
    for row in rows:
        print(f"{row['rank']:>4}  {row['bald']:8.4f}  {row['predicted_class']:>5}  {row['name']}")


if __name__ == "__main__":
    cli.run(main)
