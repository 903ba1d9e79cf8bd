"""Every shipped flagfile parses into a valid config."""

import glob
import os

import pytest
from absl import flags

from conftest import REPO
from tf_bgadl import cli
from tf_bgadl import config as config_lib
from tf_bgadl import train

CONFIGS_DIR = os.path.join(REPO, "tf_bgadl", "configs")  # `configs` is a symlink to it
FLAGFILES = sorted(glob.glob(os.path.join(CONFIGS_DIR, "*.flags")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_gives_a_valid_config(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # by bare name, from a directory outside the repository,
    args = cli.expand_flagfiles([f"--flagfile={os.path.basename(path)}"])  # as entry points do
    name = os.path.basename(path)
    flags.FLAGS.unparse_flags()
    try:
        if name.startswith("tune_"):  # a search: train flags plus tune's, checked as tune does
            from tf_bgadl import tune  # pylint: disable=import-outside-toplevel
            from tf_bgadl.tuning import settings  # pylint: disable=import-outside-toplevel
            flags.FLAGS(["tune", *args, "--workdir=/tmp/unused"])
            config = settings.check(tune.settings_from_flags(), train.config_from_flags())
        else:
            flags.FLAGS(["train", *args, "--workdir=/tmp/unused"])
            config = config_lib.validate(train.config_from_flags())
    finally:
        flags.FLAGS.unparse_flags()
    if name.startswith("tune_"):  # CPU-sized searches on a validation split
        assert config.data.validation_per_class > 0 and config.data.dataset == "mnist5k"
    elif name == "quickstart.flags":
        assert config.data.dataset == "mnist5k" and config.acquisition.method == "vaeacgan"
    elif name == "study_mnist5k_resnet18.flags":  # the mnist5k study with a ResNet18
        assert config.model.name == "resnet18" and config.model.width_multiplier == 0.25
        assert config.data.dataset == "mnist5k" and config.train.weight_decay_numerator == 0
        assert config.iterations == 5 and config.train.epochs == 30
    elif name.startswith("study_"):  # CPU-sized studies; the study sets method and seed
        assert config.model.name == "cnn"
        assert config.data.dataset == name[len("study_"):-len(".flags")]
    elif name != "base.flags":
        assert config.model.name == "resnet18" and config.iterations == 150
        assert config.acquisition.method == "vaeacgan"
        assert config.acquisition.mc_samples == 20 and config.train.epochs == 50


def test_all_datasets_have_a_flagfile():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"quickstart.flags", "mnist.flags", "cifar10.flags", "cifar100.flags",
            "svhn.flags"} <= names


def test_flag_defaults_equal_config_defaults():
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", "--workdir=/tmp/unused"])
        from_flags = train.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert config_lib.config_differences(config_lib.ExperimentConfig().to_dict(),
                                         from_flags.to_dict(), ignore=()) == []
