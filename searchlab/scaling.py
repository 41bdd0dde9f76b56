"""Feature scaling (the `scaling` hyperparameter), fitted on a fit's training rows only.

Each scaler is a scikit-learn transformer (the coarse stage's pipeline step, the fine and final stages'
arrays) that can also write itself as built-in Keras layers, so the exported model takes raw features
and loads anywhere without searchlab.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from scipy.special import ndtri
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import StandardScaler


class Standardize(StandardScaler):
    """Zero mean, unit variance per feature."""

    def keras_layers(self) -> list[keras.layers.Layer]:
        var = np.where(self.var_ > 0, self.var_, 1.0)  # as StandardScaler treats constant columns
        return [keras.layers.Normalization(mean=self.mean_.astype("float32"), variance=var.astype("float32"),
                                           name="standardize")]


class QuantileNormal(TransformerMixin, BaseEstimator):
    """Each feature mapped through its training quantiles onto a standard normal's: monotone and piecewise
    linear between `n_quantiles` knots, constant beyond the training range.

    Heavy tails and outliers no longer squeeze the bulk of a feature into a sliver of the inputs. Like
    scikit-learn's `QuantileTransformer(output_distribution="normal")`, except that the map is linear
    between knots in the normal scale, which makes it a clamped sum of ReLUs: built-in Keras layers.
    Knots are taken on values centered on the median and divided by the interquartile range (the standard
    deviation of a heavy-tailed feature would crush its bulk together), and merged closer than 1e-4 of that.
    """

    def __init__(self, n_quantiles: int = 100) -> None:
        self.n_quantiles = n_quantiles

    def fit(self, X: np.ndarray, y: Any = None) -> QuantileNormal:
        X = np.asarray(X, dtype="float64")
        self.n_features_in_ = X.shape[1]
        low, self.center_, high = np.percentile(X, [25, 50, 75], axis=0)
        spread = np.where(high > low, high - low, X.std(axis=0))
        self.scale_ = np.where(spread > 0, spread, 1.0)
        Z = (X - self.center_) / self.scale_
        levels = np.linspace(0.0, 1.0, max(2, min(self.n_quantiles, len(Z))))
        normal = ndtri(np.clip(levels, 1e-3, 1 - 1e-3))  # +-3.09 at the extremes
        self.knots_: list[np.ndarray] = []
        self.values_: list[np.ndarray] = []
        for column in Z.T:
            knots, tie = np.unique(np.round(np.quantile(column, levels), 4), return_inverse=True)
            values = np.bincount(tie, weights=normal) / np.bincount(tie)  # tied knots: their mean level
            self.knots_.append(knots)
            self.values_.append(values if len(knots) > 1 else np.zeros(1))  # a constant feature maps to 0
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype="float64") - self.center_) / self.scale_
        pairs = zip(self.knots_, self.values_, strict=True)
        return np.column_stack([np.interp(Z[:, j], k, v) for j, (k, v) in enumerate(pairs)])

    def keras_layers(self) -> list[keras.layers.Layer]:
        """z = (x - center) / scale, then per feature: values[0] + sum_i step_i * clip((z - knot_i) / width_i, 0, 1)."""
        n_features, n = len(self.knots_), max(len(k) for k in self.knots_)
        knots, inverse_widths, steps = np.zeros((3, n_features, n), dtype="float32")
        first = np.zeros(n_features, dtype="float32")
        for f, (k, v) in enumerate(zip(self.knots_, self.values_, strict=True)):
            knots[f, :len(k)], first[f] = k, v[0]
            inverse_widths[f, :len(k) - 1] = 1.0 / np.diff(k)
            steps[f, :len(k) - 1] = np.diff(v)  # padding and the last knot: step 0
        to_knots = keras.layers.EinsumDense("bf,fn->bfn", (n_features, n), bias_axes="fn", name="quantile_offsets")
        per_width = keras.layers.EinsumDense("bfn,fn->bfn", (n_features, n), name="quantile_widths")
        clip = keras.layers.ReLU(max_value=1.0, name="quantile_clip")
        to_normal = keras.layers.EinsumDense("bfn,fn->bf", (n_features,), bias_axes="f", name="quantile_values")
        for layer, shape in ((to_knots, (None, n_features)), (per_width, (None, n_features, n)),
                             (to_normal, (None, n_features, n))):
            layer.build(shape)
        to_knots.set_weights([np.ones((n_features, n), dtype="float32"), -knots])
        per_width.set_weights([inverse_widths])
        to_normal.set_weights([steps, first])
        center = keras.layers.Normalization(mean=self.center_.astype("float32"),
                                            variance=np.square(self.scale_).astype("float32"), name="quantile_center")
        return [center, to_knots, per_width, clip, to_normal]


class PiecewiseLinear(TransformerMixin, BaseEstimator):
    """Piecewise linear encoding (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
    Learning", NeurIPS 2022): each feature becomes one column per quantile bin of its training values,
    0 below the bin, 1 above it, linear in between.

    The network sees where a value lies among the training values, bin by bin, so sharp thresholds cost it
    one unit instead of many (docs/results.md has what it did on the reference tables).
    Features with fewer distinct values get fewer bins, padded with constant 0 columns to the widest
    feature's count (a constant feature: all 0). Width: n_features x up to `n_bins` columns.
    """

    def __init__(self, n_bins: int = 48) -> None:
        self.n_bins = n_bins

    def fit(self, X: np.ndarray, y: Any = None) -> PiecewiseLinear:
        X = np.asarray(X, dtype="float64")
        self.n_features_in_ = X.shape[1]
        # Edges are kept relative to a float32 center, so the exported float32 layers subtract exactly.
        self.center_ = np.median(X, axis=0).astype("float32").astype("float64")
        levels = np.linspace(0.0, 1.0, self.n_bins + 1)
        self.edges_: list[np.ndarray] = []
        for column in (X - self.center_).T:
            edges = np.quantile(column, levels)
            tolerance = 1e-6 * max(edges[-1] - edges[0], 1e-12)
            edges = edges[np.concatenate([[True], np.diff(edges) > tolerance])]  # tied quantiles: one edge
            self.edges_.append(edges if len(edges) > 1 else np.array([edges[0], edges[0] + 1.0]))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype="float64") - self.center_
        codes = np.zeros((len(Z), len(self.edges_), max(len(e) - 1 for e in self.edges_)))
        for j, e in enumerate(self.edges_):
            codes[:, j, :len(e) - 1] = np.clip((Z[:, [j]] - e[:-1]) / np.diff(e), 0.0, 1.0)
        return codes.reshape(len(Z), -1)

    def keras_layers(self) -> list[keras.layers.Layer]:
        """x - center, then per feature and bin clip((x - low) / width, 0, 1) (padding bins: 0), flattened."""
        n_features, n = len(self.edges_), max(len(e) - 1 for e in self.edges_)
        lows, inverse_widths = np.zeros((2, n_features, n), dtype="float32")
        for f, e in enumerate(self.edges_):
            lows[f, :len(e) - 1], inverse_widths[f, :len(e) - 1] = e[:-1], 1.0 / np.diff(e)
        to_lows = keras.layers.EinsumDense("bf,fn->bfn", (n_features, n), bias_axes="fn", name="piecewise_offsets")
        per_width = keras.layers.EinsumDense("bfn,fn->bfn", (n_features, n), name="piecewise_widths")
        to_lows.build((None, n_features))
        per_width.build((None, n_features, n))
        to_lows.set_weights([np.ones((n_features, n), dtype="float32"), -lows])
        per_width.set_weights([inverse_widths])
        center = keras.layers.Normalization(mean=self.center_.astype("float32"),
                                            variance=np.ones(n_features, dtype="float32"), name="piecewise_center")
        return [center, to_lows, per_width, keras.layers.ReLU(max_value=1.0, name="piecewise_clip"),
                keras.layers.Reshape((n_features * n,), name="piecewise_flat")]


Scaler = Standardize | QuantileNormal | PiecewiseLinear
_SCALERS: dict[str, type[Scaler]] = {"standard": Standardize, "quantile": QuantileNormal, "piecewise": PiecewiseLinear}


def feature_scaler(kind: str) -> Scaler:
    """An unfitted scaler of kind `kind` (one of `searchlab.space.SCALINGS`)."""
    return _SCALERS[kind]()


class FeatureScaler(TransformerMixin, BaseEstimator):
    """The coarse stage's pipeline step: a scaler whose kind is a parameter a search can set."""

    def __init__(self, scaling: str = "standard") -> None:
        self.scaling = scaling

    def fit(self, X: np.ndarray, y: Any = None) -> FeatureScaler:
        self.scaler_ = feature_scaler(self.scaling).fit(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(X)
