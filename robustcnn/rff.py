"""Random Fourier features with the minimum-norm least-squares fit (Belkin, Hsu, Ma & Mandal 2019,
"Reconciling modern machine-learning practice and the bias-variance trade-off").

phi(x) = sqrt(2/N) cos(<v_j, x> + b_j), v_j ~ N(0, I / sigma^2), b_j ~ U(0, 2 pi), j = 1..N. The weights are
the minimum-norm solution of phi(X) W = Y (one-hot targets), i.e. W = pinv(phi(X)) Y: with N < n it is the
least-squares fit, with N >= n it interpolates, and the test error peaks at N = n.
"""
from __future__ import annotations

import numpy as np


def rff_features(x: np.ndarray, n_features: int, *, sigma: float, seed: int) -> np.ndarray:
    """(n, d) inputs -> (n, N) random Fourier features; the same seed gives the same features."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0.0, 1.0 / sigma, size=(x.shape[1], n_features))
    b = rng.uniform(0.0, 2 * np.pi, size=n_features)
    return np.sqrt(2.0 / n_features) * np.cos(x @ v + b)


def min_norm_fit(phi: np.ndarray, y_onehot: np.ndarray) -> np.ndarray:
    """The minimum-norm least-squares weights (N, classes), through the SVD (as numpy's lstsq)."""
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    keep = s > s.max() * max(phi.shape) * np.finfo(phi.dtype).eps  # drop numerically zero directions
    return (vt[keep].T / s[keep]) @ (u[:, keep].T @ y_onehot)


def rff_point(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_features: int,
              *, sigma: float, seed: int, classes: int) -> dict[str, float]:
    """Train and test error (and squared loss) of the min-norm RFF fit with N features."""
    phi_train = rff_features(x_train, n_features, sigma=sigma, seed=seed)
    phi_test = rff_features(x_test, n_features, sigma=sigma, seed=seed)
    targets = np.eye(classes)[y_train]
    w = min_norm_fit(phi_train, targets)
    fit_train, fit_test = phi_train @ w, phi_test @ w
    return {"train_error": float((fit_train.argmax(1) != y_train).mean()),
            "test_error": float((fit_test.argmax(1) != y_test).mean()),
            "train_mse": float(((fit_train - targets) ** 2).sum(1).mean()),
            "test_mse": float(((fit_test - np.eye(classes)[y_test]) ** 2).sum(1).mean()),
            "weight_norm": float(np.linalg.norm(w))}


def rff_sweep_point(point: dict) -> dict[str, float]:
    """A sweep-engine point function: fit and score on the same small set (used to test executors)."""
    x, y = np.asarray(point["x"], dtype=float), np.asarray(point["y"])
    classes = int(y.max()) + 1
    return rff_point(x, y, x, y, point["features"], sigma=1.0, seed=point["seed"], classes=classes)
