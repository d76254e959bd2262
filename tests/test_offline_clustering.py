"""Offline clustering (DeepCluster, DeepCluster-v2, ODC): k-means, losses and state vs references."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import selfsup.backbones
import selfsup.methods as methods
from selfsup.losses.cluster_ce import ClusterCrossEntropyLoss, cluster_size_weights
from selfsup.methods import ViewBatch
from selfsup.nn.kmeans import _split_for_empty, kmeans, kmeans_assign, kmeans_centroids
from selfsup.nn.odc_memory import ODCMemory
from selfsup.nn.pca import pca_whiten
from selfsup.nn.sobel import Sobel
from distributed import run_distributed
from method_sizes import small

N = 32  # size of the fake training set of the smoke tests


# ----------------------------------------------------------------------------- k-means
def ref_assign(x, c, metric):
    out = []
    for i in range(len(x)):
        if metric == "euclidean":
            d = [float(((x[i].double() - c[j].double()) ** 2).sum()) for j in range(len(c))]
        else:
            xi = x[i].double() / x[i].double().norm()
            d = [-float(xi @ (c[j].double() / c[j].double().norm())) for j in range(len(c))]
        out.append(min(range(len(c)), key=lambda j: d[j]))
    return torch.tensor(out)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_assign_and_centroids_match_brute_force(metric):
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(40, 5, generator=g), torch.randn(6, 5, generator=g)
    assert torch.equal(kmeans_assign(x, c, metric, chunk_size=7), ref_assign(x, c, metric))
    labels = torch.randint(0, 6, (40,), generator=g)
    labels[labels == 2] = 1  # cluster 2 empty: keeps its previous centroid
    prev = torch.randn(6, 5, generator=g)
    got, counts = kmeans_centroids(x, labels, 6, previous=prev, metric=metric)
    for j in range(6):
        members = [x[i].double() for i in range(40) if labels[i] == j]
        assert int(counts[j]) == len(members)
        want = prev[j].double() if not members else sum(members) / len(members)
        if metric == "cosine":
            want = want / want.norm()
        torch.testing.assert_close(got[j].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_labels_are_nearest_returned_centroids(metric):
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    res = kmeans(x, 7, iterations=5, metric=metric, generator=torch.Generator().manual_seed(2))
    assert torch.equal(res.labels, ref_assign(x, res.centroids, metric))
    assert torch.equal(res.counts, torch.bincount(res.labels, minlength=7))
    again = kmeans(x, 7, iterations=5, metric=metric, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.labels, res.labels)  # seeded


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_recovers_separated_blobs(metric):
    g = torch.Generator().manual_seed(3)
    centres = 10 * torch.eye(4, 8)  # 4 orthogonal directions: separated in both metrics
    truth = torch.arange(120) % 4
    x = centres[truth] + 0.3 * torch.randn(120, 8, generator=g)
    # Lloyd's iterations from random points can stop in a local optimum when two initial points
    # fall in one blob; take the first seed whose initial points cover all blobs (a property of
    # the initialisation, checked here), then the iterations must recover the blobs exactly.
    seed = next(s for s in range(100) if len(set(truth[torch.randperm(120, generator=torch.Generator().manual_seed(s))[:4]].tolist())) == 4)
    res = kmeans(x, 4, iterations=20, metric=metric, empty="split", generator=torch.Generator().manual_seed(seed))
    # same partition up to a permutation of the cluster indices
    pairs = {(int(a), int(b)) for a, b in zip(truth, res.labels)}
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4
    # converged: centroids are the means of their members
    xs = F.normalize(x, dim=1) if metric == "cosine" else x
    for j in range(4):
        mean = xs[res.labels == j].double().mean(0)
        want = mean / mean.norm() if metric == "cosine" else mean
        torch.testing.assert_close(res.centroids[j].double(), want, atol=1e-5, rtol=1e-5)


def test_empty_cluster_is_reseeded_by_splitting_a_populated_one():
    centroids = torch.tensor([[1.0, 2.0], [5.0, 5.0], [0.0, 0.0]])
    counts = torch.tensor([10, 1, 0])
    before = centroids.clone()
    _split_for_empty(centroids, counts, torch.Generator().manual_seed(0), eps=1e-2)
    # only cluster 0 (>= 2 members) can donate; the pair straddles the old centroid
    torch.testing.assert_close((centroids[0] + centroids[2]) / 2, before[0])
    assert 0 < float((centroids[2] - before[0]).norm()) < 0.1
    torch.testing.assert_close(centroids[1], before[1])
    assert counts.tolist() == [5, 1, 5]
    # and kmeans with duplicated points never returns an empty cluster with "split"
    x = torch.cat([torch.zeros(20, 2), torch.ones(20, 2) * 4]) + 0.01 * torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    res = kmeans(x, 4, iterations=10, generator=torch.Generator().manual_seed(5))
    assert (res.counts > 0).all()


def test_pca_whiten_decorrelates_to_unit_variance():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 10, generator=g) @ torch.randn(10, 10, generator=g) + 3.0
    w = pca_whiten(x, dim=4, eps=0.0, normalize=False).double()
    assert w.shape == (500, 4)
    torch.testing.assert_close(w.T @ w / 499, torch.eye(4, dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.allclose(pca_whiten(x, dim=4).norm(dim=1), torch.ones(500), atol=1e-5)
    # first axis has the largest variance of the data: its projection is the top eigenvector
    xc = (x - x.mean(0)).double()
    top = torch.linalg.eigh(xc.T @ xc / 499)[1][:, -1]
    corr = torch.corrcoef(torch.stack([w[:, 0], xc @ top]))[0, 1].abs()
    assert float(corr) > 1 - 1e-6


def test_sobel_matches_loop_reference():
    img = torch.randn(1, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    got = Sobel()(img)
    gray = F.pad(img.mean(1)[0].double(), (1, 1, 1, 1))
    kx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    for y, x in itertools.product(range(5), range(6)):
        gx = sum(kx[a][b] * gray[y + a, x + b] for a in range(3) for b in range(3))
        gy = sum(kx[b][a] * gray[y + a, x + b] for a in range(3) for b in range(3))
        assert abs(float(got[0, 0, y, x]) - float(gx)) < 1e-5
        assert abs(float(got[0, 1, y, x]) - float(gy)) < 1e-5


# ----------------------------------------------------------------------------- loss
def ref_weighted_ce(logits, labels, weights, t):
    num = torch.zeros((), dtype=torch.float64)
    den = torch.zeros((), dtype=torch.float64)
    for i in range(len(labels)):
        row = logits[i].double() / t
        log_p = row[labels[i]] - torch.log(sum(torch.exp(v) for v in row))
        w = 1.0 if weights is None else weights[labels[i]].double()
        num, den = num - w * log_p, den + w
    return num / den


@pytest.mark.parametrize("t", [1.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_ce_matches_reference(t, weighted):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(9, 5, generator=g)
    labels = torch.randint(0, 5, (9,), generator=g)
    weights = cluster_size_weights(torch.randint(0, 5, (50,), generator=g), 5, 0.5) if weighted else None
    got = ClusterCrossEntropyLoss(t)(logits, labels, weights)
    assert float(got) == pytest.approx(float(ref_weighted_ce(logits, labels, weights, t)), abs=1e-5, rel=1e-5)


def test_cluster_size_weights_formula():
    labels = torch.tensor([0] * 9 + [1] * 4 + [3])  # cluster 2 empty
    w = cluster_size_weights(labels, 4, power=0.5)
    raw = torch.tensor([9 ** -0.5, 4 ** -0.5, 0.0, 1.0])
    torch.testing.assert_close(w, (raw / raw.sum()).float())
    assert torch.allclose(cluster_size_weights(labels, 4, 0.0)[[0, 1, 3]], torch.full((3,), 1 / 3))


def _ce_worker(rank, world, logits, labels, weights):
    x = logits.chunk(world)[rank].clone().requires_grad_(True)
    loss = ClusterCrossEntropyLoss(0.1)(x, labels.chunk(world)[rank], weights)
    loss.backward()
    return {"loss": loss.detach(), "grad": x.grad}


def test_cluster_ce_two_processes_equal_one_process(tmp_path):
    """Each rank divides its weighted sum by the MEAN over ranks of the weight sums, so the mean of
    the rank losses is sum(w ce) / sum(w) of the whole batch. DDP averages gradients over ranks,
    so the gradient a rank's rows receive is its local gradient / world, which must equal the
    one-process gradient of those rows."""
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(8, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 5, 4])  # unbalanced across the two halves
    weights = cluster_size_weights(torch.randint(0, 6, (40,), generator=g), 6, 0.5)
    full = logits.clone().requires_grad_(True)
    ref = ClusterCrossEntropyLoss(0.1)(full, labels, weights)
    ref.backward()
    out = run_distributed(_ce_worker, tmp_path, logits, labels, weights, world=2)
    torch.testing.assert_close((out[0]["loss"] + out[1]["loss"]) / 2, ref.detach(), atol=1e-10, rtol=1e-8)
    grads = torch.cat([o["grad"] for o in out]) / 2
    torch.testing.assert_close(grads, full.grad, atol=1e-10, rtol=1e-8)


# ----------------------------------------------------------------------------- methods
NAMES = ["deepcluster", "deepclusterv2", "odc"]


def fake_images():
    return torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(11))


def features_of(method):
    images = fake_images()
    return lambda: method.embed(images)


def batch(idx, n_views):
    g = torch.Generator().manual_seed(int(idx.sum()))
    return ViewBatch([torch.randn(len(idx), 3, 16, 16, generator=g) for _ in range(n_views)], torch.zeros(len(idx)).long() - 1, idx)


def engine_steps(method, batches, epoch=0):
    method.configure_training(epochs=1, steps_per_epoch=len(batches))
    method.on_epoch_start(epoch, features_of(method))
    opt = torch.optim.SGD([g for g in method.parameter_groups(0.0) if g["params"]], lr=0.1)
    losses = []
    for step, b in enumerate(batches):
        progress = method.begin_step(step)
        out = method.training_step(b)
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
        losses.append(out.loss.detach())
    return losses, out


@pytest.mark.parametrize("name", NAMES)
def test_two_steps_change_backbone_and_keep_loss_finite(name):
    torch.manual_seed(0)
    method = methods.get(name, backbone=selfsup.backbones.get("resnet_tiny", width=4), **small(name, num_samples=N))
    before = {k: v.detach().clone() for k, v in method.backbone.named_parameters()}
    views = 2 if name == "deepclusterv2" else 1
    losses, out = engine_steps(method, [batch(torch.arange(0, 8), views), batch(torch.arange(8, 16), views)])
    assert all(torch.isfinite(loss) and loss > 0 for loss in losses)
    assert any(not torch.equal(v, before[k]) for k, v in method.backbone.named_parameters())
    assert out.features is not None and out.features.shape == (8, method.feature_dim)


def test_methods_need_num_samples_and_clustering_first():
    backbone = selfsup.backbones.get("resnet_tiny", width=4)
    with pytest.raises(ValueError, match="num_samples"):
        methods.get("deepcluster", backbone=backbone, num_clusters=4)
    method = methods.get("deepcluster", backbone=backbone, **small("deepcluster", num_samples=N))
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        method.training_step(batch(torch.arange(4), 1))


def test_deepcluster_epoch_start_sets_labels_weights_and_fresh_classifier():
    torch.manual_seed(0)
    method = methods.get("deepcluster", backbone=selfsup.backbones.get("resnet_tiny", width=4), **small("deepcluster", num_samples=N))
    with torch.no_grad():
        method.classifier.weight.fill_(1.0)
        method.classifier.bias.fill_(1.0)
    feats = features_of(method)()
    method.on_epoch_start(3, lambda: feats)
    want = kmeans(pca_whiten(feats, 8), 4, iterations=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(method.labels, want.labels)
    counts = torch.bincount(method.labels, minlength=4).double()
    raw = torch.where(counts > 0, 1 / counts.clamp(min=1), torch.zeros_like(counts))
    torch.testing.assert_close(method.class_weights, (raw / raw.sum()).float())
    assert torch.equal(method.classifier.bias, torch.zeros(4))
    assert 0.002 < float(method.classifier.weight.detach().std()) < 0.05  # N(0, 0.01) again
    # the loss uses each sample's own pseudo-label, weighted by 1 / cluster size
    method.eval()
    b = batch(torch.tensor([5, 1, 30, 7]), 1)
    out = method.training_step(b)
    logits = method.classifier(method.backbone(b.views[0]))
    ref = ref_weighted_ce(logits, method.labels[b.indices], method.class_weights, 1.0)
    assert float(out.loss) == pytest.approx(float(ref), abs=1e-5)


def test_deepclusterv2_memory_prototypes_and_labels():
    torch.manual_seed(0)
    options = small("deepclusterv2", num_samples=N, num_prototypes=[4, 3, 5])  # three heads of different sizes
    method = methods.get("deepclusterv2", backbone=selfsup.backbones.get("resnet_tiny", width=4), **options)
    feats = features_of(method)()
    method.on_epoch_start(0, lambda: feats)
    method.eval()
    z = F.normalize(method.projector(feats), dim=1)
    for j in range(2):
        torch.testing.assert_close(method.memory[j], z, atol=1e-5, rtol=1e-5)
    for h, k in enumerate([4, 3, 5]):
        protos = method.prototypes(h)
        assert protos.shape == (k, options["proj_output_dim"])
        torch.testing.assert_close(protos.norm(dim=1), torch.ones(k))
        assert torch.equal(method.labels[h], ref_assign(method.memory[h % 2], protos, "cosine"))
    # loss: mean over heads and crops of CE(z . prototypes / 0.1, label)
    b = batch(torch.tensor([3, 9, 17, 21]), 2)
    out = method.training_step(b)
    zz = F.normalize(method.projector(method.backbone(torch.cat(b.views))), dim=1)
    ref = sum(ref_weighted_ce(zz @ method.prototypes(h).T, method.labels[h][b.indices].repeat(2), None, 0.1)
              for h in range(3)) / 3
    assert float(out.loss) == pytest.approx(float(ref), abs=1e-5)
    # after the step the batch's memory rows hold this step's projections of each global crop
    method.train()
    memory_before = method.memory.clone()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    out = method.training_step(b)
    with torch.no_grad():
        want = F.normalize(method.projector(method.backbone(torch.cat(b.views))), dim=1).chunk(2)
    out.loss.backward()
    opt.step()
    method.end_step()
    others = torch.ones(N, dtype=torch.bool)
    others[b.indices] = False
    for j in range(2):
        torch.testing.assert_close(method.memory[j, b.indices], want[j], atol=1e-5, rtol=1e-5)
        assert torch.equal(method.memory[j, others], memory_before[j, others])


def test_odc_memory_update_relabel_and_centroids():
    torch.manual_seed(0)
    options = small("odc", num_samples=N, centroids_update_interval=2)  # centroids recomputed within the test
    method = methods.get("odc", backbone=selfsup.backbones.get("resnet_tiny", width=4), **options)
    method.on_epoch_start(0, features_of(method))
    mem = method.memory
    assert bool(mem.initialized)
    torch.testing.assert_close(mem.features.norm(dim=1), torch.ones(N))
    for j in range(4):  # centroids = member means after initialisation
        if (mem.labels == j).any():
            torch.testing.assert_close(mem.centroids[j], mem.features[mem.labels == j].mean(0))
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    b = batch(torch.tensor([2, 4, 6, 8, 10, 12]), 1)
    feats_before, centroids_before = mem.features.clone(), mem.centroids.clone()
    method.configure_training(epochs=2, steps_per_epoch=1)
    method.begin_step(0)
    out = method.training_step(b)
    [(_, z)] = method._deferred
    out.loss.backward()
    opt.step()
    method.min_cluster_size = 0
    mem.min_cluster = 0  # isolate the sample update from the small-cluster step
    method.end_step()
    want = F.normalize(0.5 * feats_before[b.indices] + 0.5 * F.normalize(z, dim=1), dim=1)
    torch.testing.assert_close(mem.features[b.indices], want, atol=1e-6, rtol=1e-6)
    assert torch.equal(mem.labels[b.indices], (want @ centroids_before.T).argmax(1))
    assert torch.equal(mem.centroids, centroids_before)  # step 1: not yet the interval (2)
    counts = torch.bincount(mem.labels, minlength=4).double()
    raw = torch.where(counts > 0, counts.clamp(min=1) ** -0.5, torch.zeros_like(counts))
    torch.testing.assert_close(method.class_weights, (raw / raw.sum()).float())
    method.on_epoch_start(1, lambda: pytest.fail("ODC clusters the data set only once"))
    method.begin_step(1)
    out = method.training_step(batch(torch.tensor([1, 3]), 1))
    out.loss.backward()
    method.end_step()  # step 2: all centroids recomputed from the memory
    for j in range(4):
        if (mem.labels == j).any():
            torch.testing.assert_close(mem.centroids[j], mem.features[mem.labels == j].mean(0))


def test_odc_small_clusters_are_emptied_and_reseeded():
    mem = ODCMemory(num_samples=12, dim=2, num_clusters=3, min_cluster=3)
    pts = torch.tensor([[1.0, 0.1]] * 4 + [[1.0, -0.1]] * 4 + [[0.0, 1.0]] * 3 + [[0.7, 0.7]])
    labels = torch.tensor([0] * 8 + [1] * 3 + [2])  # cluster 2 has 1 sample < 3
    mem.initialize(pts, labels)
    emptied = mem.deal_with_small_clusters(torch.Generator().manual_seed(0))
    assert emptied == [2]
    f = mem.features
    # the sample of cluster 2 went to its nearest other centroid (cluster 0 or 1 by dot product)
    assert int(mem.labels[11]) == int((f[11] @ mem.centroids[:2].T).argmax()) or int(mem.labels[11]) == 2
    # cluster 2 now holds one 2-means half of the largest cluster (0): the [1, -0.1] or [1, 0.1] group
    members = set(torch.nonzero(mem.labels == 2).flatten().tolist())
    assert members in ({0, 1, 2, 3}, {4, 5, 6, 7}, {0, 1, 2, 3, 11}, {4, 5, 6, 7, 11})
    for j in (0, 2):
        torch.testing.assert_close(mem.centroids[j], f[mem.labels == j].mean(0))
