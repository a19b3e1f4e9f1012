"""The classic model: shared preprocessing + multinomial logistic regression.

Prediction is one matrix product and a softmax in numpy, the same arithmetic as scikit-learn's
`predict_proba` without its per-call validation overhead (a test checks they agree).
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np

from models.links import softmax
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema


class ClassicModel:
    """A fitted preprocessing step and a linear classifier, loadable without training code."""

    kind = "classic"

    def __init__(self, schema: FeatureSchema, preprocessor: TabularPreprocessor, estimator):
        self.schema = schema
        self.preprocessor = preprocessor
        self.estimator = estimator
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        intercept = np.asarray(estimator.intercept_, dtype=np.float64)
        if coef.shape[0] == 1:  # binary: scikit-learn stores one row for class 1
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        self._coef_t = coef.T.copy()
        self._intercept = intercept

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities for a code matrix (see `FeatureSchema.encode_rows`)."""
        X = self.preprocessor.transform(codes)
        return softmax(X.astype(np.float64) @ self._coef_t + self._intercept)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        (directory / "schema.json").write_text(self.schema.model_dump_json(indent=1))
        joblib.dump(self.preprocessor, directory / "preprocessor.joblib")
        joblib.dump(self.estimator, directory / "estimator.joblib")

    @classmethod
    def load(cls, directory: Path) -> ClassicModel:
        directory = Path(directory)
        schema = FeatureSchema.model_validate(json.loads((directory / "schema.json").read_text()))
        return cls(
            schema,
            joblib.load(directory / "preprocessor.joblib"),
            joblib.load(directory / "estimator.joblib"),
        )
