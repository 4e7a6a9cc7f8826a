"""The one error every churnlens model raises when it is used before it is fitted."""

from __future__ import annotations


class NotFittedError(ValueError, AttributeError):
    """A model was asked to predict before ``fit`` (scikit-learn's convention: a ValueError
    and an AttributeError, so code written for either catches it)."""
