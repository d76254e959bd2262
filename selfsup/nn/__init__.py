"""Reusable building blocks for self-supervised methods (depends on torch only).

Example:
    >>> head = selfsup.nn.MLP([32, 64, 16])
    >>> codes = selfsup.nn.sinkhorn(head(torch.randn(8, 32)), epsilon=0.05, iterations=3)
    >>> codes.shape
    torch.Size([8, 16])
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
from selfsup.nn.schedules import warmup_temperature
from selfsup.nn.sinkhorn import sinkhorn
from selfsup.nn.sobel import Sobel
from selfsup.nn.support_set import NearestNeighbourSupportSet
from selfsup.nn.whitening import cholesky_whiten

# masked image modelling
from selfsup.nn.a2mim_masking import fill_with_mean_colour, random_block_mask  # noqa: E402
from selfsup.nn.aim_head import AIMHead  # noqa: E402
from selfsup.nn.block_masking import block_masks, ibot_masks  # noqa: E402
from selfsup.nn.cae_regressor import CAEDecoder, LatentRegressor  # noqa: E402
from selfsup.nn.hog import HOG  # noqa: E402
from selfsup.nn.ibot_head import iBOTHead  # noqa: E402
from selfsup.nn.jepa_blocks import jepa_masks  # noqa: E402
from selfsup.nn.jepa_predictor import JEPAPredictor  # noqa: E402
from selfsup.nn.mae_decoder import MAEDecoder  # noqa: E402
from selfsup.nn.masking import random_masking  # noqa: E402
from selfsup.nn.region_mask import random_region_mask  # noqa: E402
from selfsup.nn.prefix_causal_mask import prefix_causal_mask, sample_prefix_lengths  # noqa: E402
from selfsup.nn.prototypes import CosinePrototypes  # noqa: E402

__all__ = [
    "AIMHead", "CAEDecoder", "CosinePrototypes", "HOG", "JEPAPredictor", "LatentRegressor", "MAEDecoder",
    "block_masks", "fill_with_mean_colour", "iBOTHead", "ibot_masks", "jepa_masks", "prefix_causal_mask",
    "random_block_mask", "random_masking", "random_region_mask", "sample_prefix_lengths",
    "DINOHead", "KMeansResult", "MLP", "MemoryBank", "MomentumTeacher", "NEIGHBOURS", "NearestNeighbourSupportSet", "ODCMemory",
    "Sobel", "WeightNormLinear", "at_least_fp32", "broadcast_from_rank0", "cholesky_whiten", "copy_frozen",
    "cosine_momentum", "crop_patches", "ema_update", "forward_by_resolution", "gather", "gather_no_grad", "grid_size", "patchify", "sincos_position_embedding", "unpatchify",
    "is_distributed", "kmeans", "kmeans_assign", "kmeans_centroids", "match_locations", "paper_patch_layout",
    "pca_whiten", "rank", "rotate_batch", "sample_patch_grid", "sinkhorn", "warmup_temperature", "world_size",
]
