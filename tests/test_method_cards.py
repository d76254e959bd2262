"""Method cards: one declaration per method, read by the registry, the README, the tests and the CLI.

A toy method defined only in this file is registered by a fixture (and unregistered after): it
trains through the engine, resumes exactly and shows in ``selfsup list`` without any other file
knowing about it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import selfsup.backbones as backbones
import selfsup.methods as methods
from method_sizes import ENGINE_RESNET
from selfsup import augment
from selfsup._registry import Registry, accepted_kwargs
from selfsup.cli import main
from selfsup.errors import UnknownNameError
from selfsup.methods import ANY_BACKBONE, METHODS, Method, MethodCard, StepOutput, ViewBatch
from selfsup.methods.card import MethodCardError, check_card
from selfsup.methods.table import END, START, methods_table, readme_with_methods_table
from selfsup.nn import MLP
from test_resume import assert_same_state, run_straight_and_killed

README = Path(__file__).resolve().parents[1] / "README.md"
FIELDS = dict(label="Toy", title="A Toy Method", authors="Nobody et al.", year=2024,
              paper="https://example.org/toy", code=None, family="distillation", views="simclr",
              backbones=ANY_BACKBONE, summary="two views pulled together, a running mean of the embeddings")


class ToyMethod(Method):
    """Pull two views' projections together; keep a running mean of them (state outside the gradient).

    Defined here only: the test registers it as ``toy`` and removes it afterwards.
    """

    card = MethodCard(**FIELDS, small=dict(dim=8))

    def __init__(self, backbone: torch.nn.Module, *, dim: int = 32, momentum: float = 0.9) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, dim], batch_norm=False)
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self._last: Tensor | None = None

    def training_step(self, batch: ViewBatch) -> StepOutput:
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(torch.cat([x0, x1]))
        z0, z1 = F.normalize(self.projector(features), dim=1).chunk(2)
        loss = (z0 - z1).pow(2).sum(1).mean() + (z0.mean(0) - self.running_mean).pow(2).sum()
        self._last = z0.detach().mean(0)
        return StepOutput(loss=loss, features=features[: len(x0)])

    def on_step_end(self, progress) -> None:
        if self.training and self._last is not None:
            self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * self._last)


@pytest.fixture
def toy():
    METHODS.register("toy")(ToyMethod)
    try:
        yield "toy"
    finally:
        METHODS.unregister("toy")


# ---------------------------------------------------------------------------------- every card


@pytest.mark.parametrize("name", methods.names())
def test_every_method_has_a_complete_card_its_recipe_and_options_accept(name):
    cls = METHODS.factory(name)
    card = check_card(name, cls)
    assert card is cls.__dict__["card"] and cls.default_views == card.views
    assert METHODS.describe()[name] == card.line()
    recipe = accepted_kwargs(augment.RECIPES.factory(card.views))
    for what in ("small_views", "cpu_views"):
        assert set(getattr(card, what)) <= set(recipe), f"{name}: card.{what} has options {card.views!r} lacks"
    assert all(getattr(card, field.name) not in ("", None) for field in dataclasses.fields(card) if field.name != "code")


def test_a_subclass_without_its_own_card_is_refused():
    class Unnamed(ToyMethod):
        pass

    with pytest.raises(MethodCardError, match="Unnamed must declare its own `card = MethodCard"):
        METHODS.register("unnamed")(Unnamed)
    assert "unnamed" not in methods.names()


@pytest.mark.parametrize("change, message", [
    (dict(family="contrastve"), "family 'contrastve' is not one of contrastive"),
    (dict(backbones=("cnn",)), "backbones must be a non-empty tuple of distinct kinds from resnet, vit"),
    (dict(backbones=()), "backbones must be"),
    (dict(year="2020"), "year must be the paper's year as an int"),
    (dict(paper="arxiv.org/abs/1"), "paper must be an https:// link"),
    (dict(summary="two\nlines"), "summary must be a non-empty one-line string"),
    (dict(small=[("dim", 8)]), "small must be a mapping of option names"),
])
def test_a_bad_card_names_the_field_and_what_was_expected(change, message):
    with pytest.raises(MethodCardError, match=message):
        MethodCard(**{**FIELDS, **change})


def test_a_variant_card_keeps_its_parents_fields_and_is_checked_like_any_card():
    msn, pmsn = methods.card("msn"), methods.card("pmsn")
    assert (pmsn.label, pmsn.paper) == ("PMSN", "https://arxiv.org/abs/2210.07277")
    shared = ("family", "views", "backbones", "small", "small_views", "cpu", "cpu_views", "code")
    assert all(getattr(pmsn, name) == getattr(msn, name) for name in shared)
    assert methods.card("dclw").small == methods.card("simclr").small
    with pytest.raises(MethodCardError, match="family 'contrastve' is not one of"):
        msn.variant(family="contrastve")


def test_registration_checks_the_views_recipe_and_the_size_options():
    with pytest.raises(MethodCardError, match="method 'toy2': card.views 'simclrr' is not a view recipe"):
        METHODS.register("toy2")(type("Toy2", (ToyMethod,), {"card": MethodCard(**{**FIELDS, "views": "simclrr"})}))
    bad = MethodCard(**FIELDS, small=dict(dim=8, width=3))
    with pytest.raises(MethodCardError, match=r"card.small has 'width', which Toy3.__init__ does not take; .*dim"):
        METHODS.register("toy3")(type("Toy3", (ToyMethod,), {"card": bad}))
    with pytest.raises(MethodCardError, match="differs from its card's line"):
        METHODS.register("toy4", "something else")(type("Toy4", (ToyMethod,), {"card": ToyMethod.card}))
    assert not {"toy2", "toy3", "toy4"} & set(methods.names())


def test_registry_unregister_removes_a_name_and_rejects_unknown_ones():
    registry: Registry[int] = Registry("thing")
    registry.register("one", "1")(lambda: 1)
    assert registry.unregister("one")() == 1 and registry.names() == []
    with pytest.raises(UnknownNameError, match="Unknown thing 'one'"):
        registry.unregister("one")


# ------------------------------------------------------------------------ backbone kinds, state


@pytest.mark.parametrize("name", [n for n in methods.names() if "resnet" not in methods.card(n).backbones])
def test_the_base_class_rejects_a_backbone_kind_the_card_does_not_accept(name):
    card = methods.card(name)
    with pytest.raises(TypeError) as error:
        methods.get(name, backbone=backbones.get("resnet_tiny", width=4), **card.small)
    text = str(error.value)
    assert text.startswith(card.label) and "SmallResNet (kind 'resnet')" in text
    assert all(f"{kind} = " in text for kind in card.backbones), text


def test_a_method_accepting_any_kind_takes_a_vit_and_an_unknown_encoder(toy):
    class Encoder(torch.nn.Module):
        feature_dim = 6

        def forward(self, x: Tensor) -> Tensor:
            return x.flatten(1)[:, :6]

    assert methods.get(toy, backbone=Encoder(), dim=4).feature_dim == 6
    assert methods.get(toy, backbone=backbones.get("vit_tiny", image_size=16, patch_size=4, depth=1), dim=4)


def test_is_stateful_sees_buffers_teachers_and_queues_not_normalisation_statistics(toy):
    tiny = dict(backbone=backbones.get("resnet_tiny", width=4))
    assert methods.is_stateful(methods.get(toy, **tiny, dim=4))
    assert methods.state_outside_gradient(methods.get(toy, **tiny, dim=4)) == ["running_mean"]
    simclr = methods.get("simclr", **tiny, **methods.card("simclr").small)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in simclr.projector.modules())  # BN stats exist...
    assert not methods.is_stateful(simclr)  # ...but are not state a method manages
    byol = methods.get("byol", **tiny, **methods.card("byol").small)
    assert methods.is_stateful(byol) and all(n.startswith("target.") for n in methods.state_outside_gradient(byol))
    mocov2 = methods.get("mocov2", **tiny, **methods.card("mocov2").small)
    assert "criterion.memory_bank.bank" in methods.state_outside_gradient(mocov2)


# ----------------------------------------------------------------------------------- README, CLI


def test_the_readme_methods_table_is_the_one_the_cards_render():
    readme = README.read_text()
    assert START in readme and END in readme
    assert readme_with_methods_table(readme) == readme, (
        "README.md's methods table differs from the method cards; rewrite it with "
        "`python -m selfsup.methods.table README.md`")


def test_a_changed_card_changes_the_rendered_table():
    cards = METHODS.cards()
    changed = {**cards, "simclr": dataclasses.replace(cards["simclr"], year=2019)}
    assert methods_table(changed) != methods_table(cards)
    assert "| `simclr` | 2019 |" in methods_table(changed)
    with pytest.raises(ValueError, match="methods table"):
        readme_with_methods_table("no markers here")


def test_selfsup_list_shows_family_year_and_title_and_long_shows_every_field(toy, capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dino = next(line for line in lines if line.strip().startswith("dino "))
    assert "distillation" in dino and "2021" in dino and "Emerging Properties in Self-Supervised" in dino
    assert any(line.split()[:2] == ["toy", "distillation"] and "A Toy Method" in line for line in lines)
    assert main(["list", "--long"]) == 0
    out = capsys.readouterr().out
    assert "  toy:\n    label: Toy\n    title: A Toy Method\n" in out
    for field in dataclasses.fields(MethodCard):
        assert f"    {field.name}: " in out


# ----------------------------------------------------------------------- a method in a test file


def test_a_toy_method_trains_through_the_engine_and_resumes_exactly(toy, tmp_path, monkeypatch):
    extra = ["--method", toy, *ENGINE_RESNET, *methods.card(toy).overrides("small")]
    straight, resumed = run_straight_and_killed(tmp_path, monkeypatch, extra)
    assert straight["global_step"] == resumed["global_step"]
    assert_same_state(straight, resumed)
    assert straight["state_dict"]["method.running_mean"].abs().sum() > 0  # the state did move
