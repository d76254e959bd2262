"""Reusable building blocks for self-supervised methods (depends on torch only).

Example:
    >>> head = selfsup.nn.MLP([512, 2048, 128])
    >>> codes = selfsup.nn.sinkhorn(scores, epsilon=0.05, iterations=3)
"""
from selfsup.nn.broadcast import broadcast_from_rank0
from selfsup.nn.dense_match import match_locations
from selfsup.nn.dino_head import DINOHead, WeightNormLinear
from selfsup.nn.distributed import gather, gather_no_grad, is_distributed, rank, world_size
from selfsup.nn.kmeans import KMeansResult, kmeans, kmeans_assign, kmeans_centroids
from selfsup.nn.memory_bank import MemoryBank
from selfsup.nn.mlp import MLP
from selfsup.nn.momentum import MomentumTeacher, copy_frozen, cosine_momentum, ema_update
from selfsup.nn.multicrop import forward_by_resolution
from selfsup.nn.odc_memory import ODCMemory
from selfsup.nn.patches import grid_size, patchify, sincos_position_embedding, unpatchify
from selfsup.nn.patch_grid import NEIGHBOURS, crop_patches, paper_patch_layout, sample_patch_grid
from selfsup.nn.pca import pca_whiten
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.rotation import rotate_batch
from selfsup.nn.sinkhorn import sinkhorn
from selfsup.nn.sobel import Sobel
from selfsup.nn.support_set import NearestNeighbourSupportSet
from selfsup.nn.whitening import cholesky_whiten

__all__ = [
    "DINOHead", "KMeansResult", "MLP", "MemoryBank", "MomentumTeacher", "NEIGHBOURS", "NearestNeighbourSupportSet", "ODCMemory",
    "Sobel", "WeightNormLinear", "at_least_fp32", "broadcast_from_rank0", "cholesky_whiten", "copy_frozen",
    "cosine_momentum", "crop_patches", "ema_update", "forward_by_resolution", "gather", "gather_no_grad", "grid_size", "patchify", "sincos_position_embedding", "unpatchify",
    "is_distributed", "kmeans", "kmeans_assign", "kmeans_centroids", "match_locations", "paper_patch_layout",
    "pca_whiten", "rank", "rotate_batch", "sample_patch_grid", "sinkhorn", "world_size",
]
