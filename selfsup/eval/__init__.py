"""Evaluation of frozen representations: feature extraction and weighted k-NN.

Example:
    >>> scores = selfsup.eval.knn_eval(backbone, train_set, test_set, EvalTransform(32, mean, std))
    >>> scores["top1"]
"""
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy, knn_predict
from selfsup.eval.protocol import knn_eval

__all__ = ["extract_features", "knn_accuracy", "knn_eval", "knn_predict"]
