"""Self-supervised losses, one family per module; each a plain ``nn.Module``.

Example:
    >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of two views of 8 images
    >>> selfsup.losses.NTXentLoss(temperature=0.5)(z0, z1).shape
    torch.Size([])
    >>> loss = selfsup.losses.BarlowTwinsLoss()(z0, z1)
"""
from selfsup.losses.a2mim import A2MIMLoss, focal_frequency_loss
from selfsup.losses.aim import AIMLoss
from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.cae import CAELoss
from selfsup.losses.cluster_ce import ClusterCrossEntropyLoss, cluster_size_weights
from selfsup.losses.dcl import DCLLoss, DCLWLoss, VonMisesFisherWeight
from selfsup.losses.densecl import DenseContrastiveLoss
from selfsup.losses.dino import DINOLoss
from selfsup.losses.distillation import FeatureMapMSELoss
from selfsup.losses.fastsiam import FastSiamLoss
from selfsup.losses.gram import GramAnchoringLoss
from selfsup.losses.ibot import SinkhornDistillationLoss, iBOTPatchLoss
from selfsup.losses.ijepa import JEPALoss
from selfsup.losses.inpainting import InpaintingLoss, centre_weights, hidden_pixels_loss
from selfsup.losses.koleo import KoLeoLoss
from selfsup.losses.lejepa import LeJEPALoss, SIGReg
from selfsup.losses.mae import MAELoss
from selfsup.losses.maskfeat import MaskedFeatureLoss
from selfsup.losses.mmcr import MMCRLoss
from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.losses.msn import MSNLoss, power_law_prior
from selfsup.losses.negative_cosine import NegativeCosineSimilarity
from selfsup.losses.nnclr import NNCLRLoss
from selfsup.losses.npid import NPIDLoss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.ressl import ReSSLLoss
from selfsup.losses.simdino import SimDINOLoss, coding_rate
from selfsup.losses.simmim import SimMIMLoss
from selfsup.losses.supcon import SupConLoss
from selfsup.losses.swav import SwAVLoss
from selfsup.losses.tico import TiCoLoss
from selfsup.losses.vicreg import VICRegLoss
from selfsup.losses.vicregl import VICRegLLoss, nearest_matches
from selfsup.losses.wmse import WMSELoss

__all__ = [
    "A2MIMLoss", "AIMLoss", "CAELoss", "InpaintingLoss", "centre_weights", "hidden_pixels_loss", "JEPALoss", "KoLeoLoss", "LeJEPALoss", "MAELoss", "MSNLoss", "MaskedFeatureLoss",
    "SIGReg", "SimDINOLoss", "SimMIMLoss", "coding_rate", "SinkhornDistillationLoss", "focal_frequency_loss", "iBOTPatchLoss", "power_law_prior",
    "BarlowTwinsLoss", "ClusterCrossEntropyLoss", "DCLLoss", "DCLWLoss", "DINOLoss", "DenseContrastiveLoss", "FastSiamLoss", "FeatureMapMSELoss", "GramAnchoringLoss", "MMCRLoss",
    "MoCoV3Loss", "NNCLRLoss", "NPIDLoss", "NTXentLoss", "NegativeCosineSimilarity", "ReSSLLoss", "SupConLoss",
    "SwAVLoss", "TiCoLoss", "VICRegLoss", "VICRegLLoss", "nearest_matches", "VonMisesFisherWeight", "WMSELoss", "cluster_size_weights",
]
