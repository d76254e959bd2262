"""Evaluation of frozen and fine-tuned representations.

Protocols: weighted k-NN (:func:`knn_eval`, :func:`knn_sweep`), the linear probe on cached features
(:func:`linear_probe`), fine-tuning (:func:`finetune`), and semi-supervised label fractions
(:func:`balanced_subset` + either). Hyper-parameters are chosen on a validation part of the
training split (:func:`stratified_holdout`); the test split is scored once. Results are written with
:func:`write_result`, which records the checkpoint, data hashes (:func:`split_hash`), settings,
seed and library version. Collapse monitors (:func:`embedding_std`, :func:`rankme`), pictures
(:func:`embedding_map`, :func:`neighbour_grid`, :func:`training_curves`, :func:`attention_maps`)
and embedding export (:func:`write_embeddings`) are here too.

Example:
    >>> train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")
    >>> transform = selfsup.augment.EvalTransform(8, train_set.mean, train_set.std)
    >>> backbone = selfsup.backbones.get("resnet_tiny", width=4, in_channels=1)  # untrained, for the example
    >>> scores = selfsup.eval.knn_eval(backbone, train_set, test_set, transform)
    >>> sorted(scores)  # top-1 / top-5 accuracy in percent
    ['top1', 'top5']
"""
from selfsup.eval.cache import cached_features
from selfsup.eval.collapse import collapse_metrics, embedding_std, rankme
from selfsup.eval.export import sample_names, write_embeddings
from selfsup.eval.features import extract_features
from selfsup.eval.finetune import finetune, layer_decay_groups
from selfsup.eval.inputs import ChannelAdapter, match_channels, match_stats
from selfsup.eval.knn import knn_accuracy, knn_predict, knn_sweep
from selfsup.eval.linear import linear_probe, train_linear
from selfsup.eval.metrics import topk_accuracy
from selfsup.eval.pictures import attention_maps, cosine_neighbours, embedding_map, neighbour_grid, training_curves
from selfsup.eval.protocol import knn_eval
from selfsup.eval.records import file_sha256, read_result, read_subset, write_result
from selfsup.eval.splits import balanced_subset, split_hash, stratified_holdout

__all__ = [
    "ChannelAdapter",
    "attention_maps",
    "balanced_subset",
    "cached_features",
    "collapse_metrics",
    "cosine_neighbours",
    "embedding_map",
    "embedding_std",
    "extract_features",
    "file_sha256",
    "finetune",
    "knn_accuracy",
    "knn_eval",
    "knn_predict",
    "knn_sweep",
    "layer_decay_groups",
    "linear_probe",
    "match_channels",
    "match_stats",
    "neighbour_grid",
    "rankme",
    "read_result",
    "read_subset",
    "sample_names",
    "split_hash",
    "stratified_holdout",
    "topk_accuracy",
    "train_linear",
    "training_curves",
    "write_embeddings",
    "write_result",
]
