"""tf_bgadl: Bayesian Generative Active Deep Learning (Tran et al., ICML 2019) in TF/Keras 3.

Importing the package has no side effects: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
