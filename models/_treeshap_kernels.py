"""Numba kernels behind :mod:`models.contributions` (imported lazily: numba is slow to import).

The arrays they take are the flattened trees built by ``models.contributions.CompiledTrees``;
see that module for the algorithm.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# LightGBM's kZeroThreshold is the float literal 1e-35f, compared as a double.
ZERO_THRESHOLD = float(np.float32(1e-35))
INT32_MAX_PLUS_ONE = 2147483648.0


@njit(nogil=True, cache=True)
def _tree_decisions(
    Xt: np.ndarray,
    n_rows: int,
    n0: int,
    n1: int,
    node_feature: np.ndarray,
    threshold: np.ndarray,
    is_categorical: np.ndarray,
    nan_left: np.ndarray,
    zero_missing: np.ndarray,
    default_left: np.ndarray,
    cat_start: np.ndarray,
    cat_end: np.ndarray,
    cat_words: np.ndarray,
    goes_left: np.ndarray,
) -> None:
    """LightGBM's ``Tree::Decision`` (tree.h) for one tree's nodes and a block of rows.

    ``Xt`` is the block transposed (features x rows), so each node compares one contiguous
    column; ``goes_left[node - n0, row]`` receives the outcome. Numerical nodes are written as
    selects, not branches: NaNs and comparisons vary row to row and would mispredict.
    ``nan_left`` is where a NaN goes (missing type None turns NaN into 0.0 first; Zero and NaN
    send it to the default side); ``zero_missing`` marks missing type Zero.
    """
    for node in range(n0, n1):
        column = Xt[node_feature[node]]
        out = goes_left[node - n0]
        if is_categorical[node]:
            start = cat_start[node]
            n_words = cat_end[node] - start
            for r in range(n_rows):
                fval = column[r]
                left = False
                # static_cast<int>: NaN and out-of-range values become INT_MIN, i.e. negative.
                if not np.isnan(fval) and -INT32_MAX_PLUS_ONE < fval < INT32_MAX_PLUS_ONE:
                    code = int(fval)  # truncates toward zero like the C++ cast
                    if code >= 0 and (code >> 5) < n_words:
                        word = cat_words[start + (code >> 5)]
                        left = (word >> np.uint32(code & 31)) & np.uint32(1) == 1
                out[r] = left
        else:
            thr = threshold[node]
            on_nan = nan_left[node]
            on_default = default_left[node]
            if zero_missing[node]:
                for r in range(n_rows):
                    fval = column[r]
                    left = fval <= thr
                    left = on_default if abs(fval) <= ZERO_THRESHOLD else left
                    out[r] = on_nan if np.isnan(fval) else left
            else:
                for r in range(n_rows):
                    fval = column[r]
                    out[r] = on_nan if np.isnan(fval) else fval <= thr


@njit(nogil=True, cache=True)
def _leaf_shap(
    d: int,
    z: np.ndarray,
    z0: int,
    pattern: int,
    value: float,
    weights: np.ndarray,
    e: np.ndarray,
    e_minus: np.ndarray,
    out: np.ndarray,
) -> None:
    """Shapley values of one leaf's path game for one pattern of satisfied path features.

    ``z[z0:z0+d]`` are the cover fractions of the leaf's distinct path features; bit k of
    ``pattern`` says whether the row satisfies every condition on feature k along the path.
    ``out[k]`` receives feature k's contribution (already multiplied by the leaf value).
    """
    m = 0
    z_absent = 1.0
    e[0] = 1.0
    for k in range(d):
        if (pattern >> k) & 1:
            m += 1
            e[m] = 0.0
            zk = z[z0 + k]
            for j in range(m, 0, -1):
                e[j] += zk * e[j - 1]
        else:
            z_absent *= z[z0 + k]
    # Features not satisfied by the row all receive the same share.
    absent_sum = 0.0
    for s in range(m + 1):
        absent_sum += weights[d, s] * e[m - s]
    absent_share = -value * z_absent * absent_sum
    for k in range(d):
        if (pattern >> k) & 1:
            zk = z[z0 + k]
            # Divide the polynomial prod(1 + z_f t) by (1 + z_k t); stable because z_k <= 1.
            e_minus[0] = 1.0
            for j in range(1, m):
                e_minus[j] = e[j] - zk * e_minus[j - 1]
            total = 0.0
            for s in range(m):
                total += weights[d, s] * e_minus[m - 1 - s]
            out[k] = value * (1.0 - zk) * z_absent * total
        else:
            out[k] = absent_share


@njit(nogil=True, cache=True)
def fill_tables(
    leaf_value: np.ndarray,
    feat_start: np.ndarray,
    feat_z: np.ndarray,
    table_start: np.ndarray,
    weights: np.ndarray,
    tables: np.ndarray,
) -> None:
    """Precompute every leaf's contributions for all 2**d patterns (FastTreeSHAP v2 idea)."""
    max_d = weights.shape[0]
    e = np.empty(max_d + 1)
    e_minus = np.empty(max_d + 1)
    for leaf in range(leaf_value.shape[0]):
        t0 = table_start[leaf]
        if t0 < 0:
            continue
        z0 = feat_start[leaf]
        d = feat_start[leaf + 1] - z0
        for pattern in range(1 << d):
            _leaf_shap(
                d, feat_z, z0, pattern, leaf_value[leaf], weights, e, e_minus,
                tables[t0 + pattern * d : t0 + pattern * d + d],
            )


@njit(nogil=True, cache=True)
def accumulate(
    X: np.ndarray,
    row_lo: int,
    row_hi: int,
    tree_lo: int,
    tree_hi: int,
    trees_per_iteration: int,
    n_features: int,
    node_start: np.ndarray,
    node_feature: np.ndarray,
    threshold: np.ndarray,
    is_categorical: np.ndarray,
    nan_left: np.ndarray,
    zero_missing: np.ndarray,
    default_left: np.ndarray,
    cat_start: np.ndarray,
    cat_end: np.ndarray,
    cat_words: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    path_start: np.ndarray,
    path_code: np.ndarray,
    feat_start: np.ndarray,
    feat_index: np.ndarray,
    feat_z: np.ndarray,
    table_start: np.ndarray,
    tables: np.ndarray,
    weights: np.ndarray,
    max_nodes: int,
    block_rows: int,
    out: np.ndarray,
) -> None:
    """Add the SHAP values of trees [tree_lo, tree_hi) for rows [row_lo, row_hi) into ``out``.

    Rows go in blocks and trees inside a block, so one tree's tables and the block's output
    rows stay in cache while every row of the block visits them. ``path_code`` packs a path
    step as ``local_node << 7 | wants_left << 6 | feature_bit``.
    """
    max_d = weights.shape[0]
    width = out.shape[1]
    goes_left = np.empty((max(max_nodes, 1), block_rows), dtype=np.uint8)
    Xt = np.empty((X.shape[1], block_rows), dtype=np.float64)
    # The block's output transposed (columns x rows): each table read then adds into a
    # contiguous run of rows, and every inner loop below runs over rows, which vectorises.
    out_t = np.empty((width, block_rows), dtype=np.float64)
    pattern = np.empty(block_rows, dtype=np.int64)
    e = np.empty(max_d + 1)
    e_minus = np.empty(max_d + 1)
    scratch = np.empty(max_d + 1)
    for block_lo in range(row_lo, row_hi, block_rows):
        n_rows = min(block_rows, row_hi - block_lo)
        for r in range(n_rows):
            for f in range(X.shape[1]):
                Xt[f, r] = X[block_lo + r, f]
        out_t[:, :n_rows] = 0.0
        for tree in range(tree_lo, tree_hi):
            n0 = node_start[tree]
            n1 = node_start[tree + 1]
            if n1 == n0:
                continue  # a single-leaf tree only shifts the expected value
            col0 = (tree % trees_per_iteration) * (n_features + 1)
            _tree_decisions(
                Xt, n_rows, n0, n1, node_feature, threshold, is_categorical, nan_left,
                zero_missing, default_left, cat_start, cat_end, cat_words, goes_left,
            )
            for leaf in range(leaf_start[tree], leaf_start[tree + 1]):
                f0 = feat_start[leaf]
                d = feat_start[leaf + 1] - f0
                full = (np.int64(1) << d) - 1
                for r in range(n_rows):
                    pattern[r] = full
                for p in range(path_start[leaf], path_start[leaf + 1]):
                    code = path_code[p]
                    outcomes = goes_left[code >> 7]
                    wants = np.uint8((code >> 6) & 1)
                    bit = code & 63
                    # Clear the feature's bit where the row leaves the path: branch-free.
                    for r in range(n_rows):
                        pattern[r] &= ~(np.int64(outcomes[r] ^ wants) << bit)
                t0 = table_start[leaf]
                if t0 >= 0:
                    for r in range(n_rows):
                        pattern[r] = t0 + pattern[r] * d
                    for k in range(d):
                        target = out_t[col0 + feat_index[f0 + k]]
                        for r in range(n_rows):
                            target[r] += tables[pattern[r] + k]
                else:
                    for r in range(n_rows):
                        _leaf_shap(
                            d, feat_z, f0, pattern[r], leaf_value[leaf], weights, e, e_minus,
                            scratch,
                        )
                        for k in range(d):
                            out_t[col0 + feat_index[f0 + k], r] += scratch[k]
        for r in range(n_rows):
            for c in range(width):
                out[block_lo + r, c] += out_t[c, r]


@njit(nogil=True, cache=True)
def reached_leaves(
    X: np.ndarray,
    tree_lo: int,
    tree_hi: int,
    node_start: np.ndarray,
    node_feature: np.ndarray,
    threshold: np.ndarray,
    is_categorical: np.ndarray,
    nan_left: np.ndarray,
    zero_missing: np.ndarray,
    default_left: np.ndarray,
    cat_start: np.ndarray,
    cat_end: np.ndarray,
    cat_words: np.ndarray,
    leaf_start: np.ndarray,
    path_start: np.ndarray,
    path_code: np.ndarray,
    max_nodes: int,
) -> np.ndarray:
    """Per row and tree, the leaf whose whole path the row satisfies (-1 none, -2 several).

    Uses the same decisions and path bookkeeping as :func:`accumulate`, so comparing it with
    ``pred_leaf=True`` checks the split-outcome logic against LightGBM itself.
    """
    n = X.shape[0]
    result = np.full((n, tree_hi - tree_lo), -1, dtype=np.int32)
    goes_left = np.empty((max(max_nodes, 1), max(n, 1)), dtype=np.uint8)
    Xt = np.ascontiguousarray(X.T)
    for tree in range(tree_lo, tree_hi):
        n0 = node_start[tree]
        n1 = node_start[tree + 1]
        l0 = leaf_start[tree]
        if n1 == n0:
            result[:, tree - tree_lo] = 0
            continue
        _tree_decisions(
            Xt, n, n0, n1, node_feature, threshold, is_categorical, nan_left,
            zero_missing, default_left, cat_start, cat_end, cat_words, goes_left,
        )
        for row in range(n):
            for leaf in range(l0, leaf_start[tree + 1]):
                satisfied = True
                for p in range(path_start[leaf], path_start[leaf + 1]):
                    code = path_code[p]
                    if goes_left[code >> 7, row] != (code >> 6) & 1:
                        satisfied = False
                if satisfied:
                    previous = result[row, tree - tree_lo]
                    result[row, tree - tree_lo] = leaf - l0 if previous == -1 else -2
    return result
