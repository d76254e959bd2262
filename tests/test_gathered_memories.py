"""Every queue and memory bank receives the keys of all processes, at global sample ids.

One two-process run (gloo on this machine) updates each family's memory with rank-specific rows:
the MoCo family's, ReSSL's and DenseCL's queue (:class:`~selfsup.nn.MemoryBank`), NNCLR's support
set, ODC's sample memory and NPID's memory bank. Afterwards every rank must hold the same memory
and it must contain both ranks' rows, the indexed memories at the global ids the ranks passed.
SwAV's queue is per process by design (the official code's ``queue_length / world_size``), and
DeepCluster v2's gathered memory is checked by ``tests/test_offline_clustering.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distributed import run_distributed
from selfsup.losses import NPIDLoss
from selfsup.nn.memory_bank import MemoryBank
from selfsup.nn.odc_memory import ODCMemory
from selfsup.nn.support_set import NearestNeighbourSupportSet


def rows(rank: int) -> torch.Tensor:
    """Two 3-d rows that say which rank made them."""
    return F.normalize(torch.tensor([[1.0 + rank, 2.0, 3.0 * rank], [rank - 1.0, 1.0, 0.5]]), dim=1)


def ids(rank: int) -> torch.Tensor:
    """The global sample ids of this rank's two rows (rank 0: 1 and 4, rank 1: 6 and 3)."""
    return torch.tensor([[1, 4], [6, 3]][rank])


def _worker(rank: int, world: int) -> dict:
    torch.manual_seed(0)  # as every rank of a run is seeded alike: the queues start equal
    queue = MemoryBank(8, 3, gather_distributed=True)
    queue.enqueue(rows(rank))
    support = NearestNeighbourSupportSet(8, 3, gather_distributed=True)
    support.update(rows(rank))
    odc = ODCMemory(num_samples=8, dim=3, num_clusters=2, momentum=1.0, min_cluster=1)  # ODC weighs the new rows by m
    odc.initialize(torch.ones(8, 3), torch.arange(8) % 2)
    odc.update_samples(ids(rank), rows(rank))  # the rows replace the memory's
    npid = NPIDLoss(num_samples=8, dim=3, num_negatives=2, momentum=0.0)
    npid.fill_memory(torch.ones(8, 3))
    npid.update_memory(rows(rank), ids(rank))  # NPID weighs the old rows by m: 0 replaces them
    return {"queue": queue.features(), "support": support.queue.features(), "odc": odc.features.clone(),
            "npid": npid.memory.clone()}


def test_every_memory_holds_the_rows_of_all_processes(tmp_path) -> None:
    results = run_distributed(_worker, tmp_path, world=2)
    both = torch.cat([rows(0), rows(1)])
    for name in ("queue", "support", "odc", "npid"):
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=0, msg=name)  # ranks agree
    for name in ("queue", "support"):  # the newest keys, rank 0's then rank 1's, whatever the queue's layout
        held = results[0][name]
        for row in both:
            assert torch.isclose(held, row, atol=1e-6).all(dim=1).any(), (name, row, held)
    for name in ("odc", "npid"):  # each row at its global sample id; the others untouched
        memory = results[0][name]
        torch.testing.assert_close(memory[torch.cat([ids(0), ids(1)])], both, rtol=0, atol=1e-6, msg=name)
        untouched = [i for i in range(8) if i not in {1, 4, 6, 3}]
        torch.testing.assert_close(memory[untouched], F.normalize(torch.ones(len(untouched), 3), dim=1),
                                   rtol=0, atol=1e-6, msg=name)
