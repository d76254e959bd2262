"""Self-supervised losses."""
from selfsup.losses.negative_cosine import NegativeCosineSimilarity
from selfsup.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss", "NegativeCosineSimilarity"]
