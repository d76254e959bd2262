"""The one build from a config (selfsup.config.build): validation and training run it and raise the
same errors; method and view recipe must agree on their global views; ``num_samples`` is filled in
once; the allowed values of enumerated keys are declared once; ``mocov2`` lives in ``mocov2.py``."""
from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

import selfsup.augment as augment
import selfsup.data as data
import selfsup.methods as methods
from selfsup.config import from_dict, load, validate
from selfsup.config.build import DataFacts, build
from selfsup.config.view_counts import leading_global_views
from selfsup.errors import ConfigError
from selfsup.training import train

config_load = importlib.import_module("selfsup.config.load")  # the module (selfsup.config.load is the function)

TINY = {"backbone": {"name": "resnet_tiny", "width": 4}, "augment": {"size": 16}}
VIT = {"backbone": {"name": "vit_tiny", "image_size": 16, "patch_size": 4, "depth": 1}}
HEAD = {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}


def config_of(method: dict, *, vit: bool = False, **sections):
    """A config built without validation (what a Python user may hand to ``train``)."""
    base = dict(VIT if vit else TINY)
    base["augment"] = {**base.get("augment", {}), **sections.pop("augment", {})}
    return from_dict({**base, "method": method, "data": {"name": "digits"}, "precision": "32-true",
                      "progress_bar": False, **sections})


@pytest.fixture(scope="module")
def digits_facts() -> DataFacts:
    return DataFacts.of(data.get("digits", split="train"))


def error_of(call) -> tuple[type, str]:
    with pytest.raises(ConfigError) as info:
        call()
    return type(info.value), str(info.value)


# ---------------------------------------------------------------- one build, two callers


BAD = [
    pytest.param({"name": "simclr", "temperature": 0}, {}, False, "section 'method'.*temperature", id="temperature"),
    pytest.param({"name": "byol", "base_momentum": 1.5}, {}, False, "section 'method'.*momentum", id="momentum"),
    pytest.param({"name": "simclr"}, {"recipe": "simclr", "hflip_p": 2}, False, "section 'augment'.*hflip_p", id="probability"),
    pytest.param({"name": "dino", "num_global_views": 3, **HEAD}, {}, False, "'method.num_global_views' \\(3\\)",
                 id="dino-global-views"),
    pytest.param({"name": "ibot", **HEAD}, {"recipe": "multicrop", "num_global": 3, "num_local": 1}, True,
                 "'method.num_global_views' \\(2\\).*'augment.num_global'", id="ibot-multicrop"),
    pytest.param({"name": "mae"}, {}, False, "section 'method'.*VisionTransformer", id="backbone-kind"),
]


@pytest.mark.parametrize("method, views, vit, pattern", BAD)
def test_validation_raises_what_the_training_build_raises(digits_facts, method, views, vit, pattern):
    config = config_of(method, vit=vit, augment=views)
    at_validation = error_of(lambda: validate(config))
    at_training = error_of(lambda: build(config, digits_facts))
    assert at_validation == at_training
    assert at_validation[0] is ConfigError
    assert re.search(pattern, at_validation[1]), at_validation[1]


def test_train_stops_with_the_validation_error_before_any_step(tmp_path):
    config = config_of({"name": "dino", "num_global_views": 3, **HEAD}, output_dir=str(tmp_path), epochs=1,
                       batch_size=64)
    expected = error_of(lambda: validate(config))
    assert error_of(lambda: train(config)) == expected
    assert not list(tmp_path.glob("*/checkpoints/*.ckpt"))


def test_validation_builds_on_the_meta_device_and_training_on_real_data(digits_facts):
    config = config_of({"name": "npid"})
    dry = build(config, DataFacts.stand_in(config), meta=True)
    assert next(dry.method.parameters()).is_meta
    real = build(config, digits_facts)
    assert not next(real.method.parameters()).is_meta
    # num_samples is filled in by the build, from the data: one memory slot per training image
    assert real.method.criterion.memory.shape[0] == digits_facts.num_samples == 1347


def test_the_real_data_sets_channels_size_and_normalisation(digits_facts):
    config = config_of({"name": "simclr"}, augment={})
    config.augment.pop("size")
    parts = build(config, digits_facts)
    assert parts.backbone(torch.zeros(2, 1, 8, 8)).shape[0] == 2  # grey images: a 1-channel stem
    assert parts.views.output_sizes(8, 8) == [(8, 8), (8, 8)]
    # the recipe at the data's size and normalisation, seeded with the config's seed
    expected = augment.get("simclr", size=8, mean=digits_facts.mean, std=digits_facts.std, seed=config.seed)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert all(torch.equal(a, b) for a, b in zip(parts.views(images), expected(images)))


# ---------------------------------------------------------------- method and views agree on global views


def test_leading_global_views_of_the_recipes():
    assert leading_global_views(augment.get("dino", size=32), 32) == 2
    assert leading_global_views(augment.get("multicrop", size=32, num_global=3, num_local=2), 32) == 3
    assert leading_global_views(augment.get("byol", size=32), 32) == 2
    assert leading_global_views(augment.get("msn", size=32, num_random=2), 32) == 3  # target + 2 random anchors
    assert leading_global_views(augment.get("crop_flip", size=32), 32) == 1


def test_dino_teacher_views_must_match_the_recipe_naming_both_keys(digits_facts):
    fixed = config_of({"name": "dino", "num_global_views": 1, **HEAD})
    message = error_of(lambda: build(fixed, digits_facts))[1]
    assert "'method.num_global_views' (1)" in message and "recipe 'dino'" in message
    assert "makes 2" in message and "augment.num_global" in message  # says which recipe has the option
    multicrop = config_of({"name": "dino", **HEAD}, augment={"recipe": "multicrop", "num_global": 3})
    message = error_of(lambda: build(multicrop, digits_facts))[1]
    assert "'method.num_global_views' (2)" in message and "'augment.num_global'" in message and "makes 3" in message
    agreed = config_of({"name": "dino", "num_global_views": 3, **HEAD}, augment={"recipe": "multicrop", "num_global": 3})
    assert build(agreed, digits_facts).method.num_global_views == 3


@pytest.mark.parametrize("name, vit, options", [
    ("ibot", True, HEAD), ("dinov2", True, HEAD),
    ("deepclusterv2", False, {"num_prototypes": [8], "proj_hidden_dim": 8, "proj_output_dim": 4}),
])
def test_other_methods_with_global_views_are_checked(digits_facts, name, vit, options):
    config = config_of({"name": name, "num_global_views": 3, **options}, vit=vit)
    assert "'method.num_global_views' (3)" in error_of(lambda: build(config, digits_facts))[1]
    agreed = config_of({"name": name, "num_global_views": 3, **options}, vit=vit,
                       augment={"recipe": "multicrop", "num_global": 3, "num_local": 1})
    build(agreed, digits_facts)


def test_swav_may_assign_codes_on_a_subset_of_the_global_views(digits_facts):
    small = {"name": "swav", "num_prototypes": 8, "proj_hidden_dim": 8, "proj_output_dim": 4}
    build(config_of({**small, "num_assign_views": 1}), digits_facts)  # official crops_for_assign may be [0]
    too_many = config_of({**small, "num_assign_views": 3})
    message = error_of(lambda: build(too_many, digits_facts))[1]
    assert "'method.num_assign_views' (3)" in message and "at least 3" in message and "makes 2" in message


# ---------------------------------------------------------------- allowed values declared once


def test_validation_reads_the_allowed_values_where_they_are_used():
    from selfsup.data import folder
    from selfsup.engine import optim, precision, schedule

    assert config_load.OPTIMIZERS is optim.OPTIMIZERS
    assert config_load.SCALING_RULES is schedule.SCALING_RULES
    assert config_load.PRECISIONS is precision.PRECISIONS
    assert "DECODERS" in inspect.getsource(config_load.validate) and folder.DECODERS == ("auto", "torchvision", "pil")
    with pytest.raises(ConfigError, match="'optimizer.name' must be one of sgd, lars, adamw; got 'sgdd'"):
        load(overrides=["optimizer.name=sgdd"])
    with pytest.raises(ConfigError, match="'precision' must be one of auto, 32-true, bf16-mixed, 16-mixed, 64-true"):
        load(overrides=["precision=bf16"])
    assert load(overrides=['precision="32"']).precision == "32"  # the alias stays accepted
    assert precision.resolve_precision("32", "cpu") == "32-true"


def test_every_allowed_optimizer_builds():
    from selfsup.engine.optim import OPTIMIZERS, OptimizerConfig, build_optimizer

    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    for name in OPTIMIZERS:
        assert build_optimizer(groups, OptimizerConfig(name=name), 256).param_groups[0]["peak_lr"] > 0
    with pytest.raises(ValueError, match="one of sgd, lars, adamw"):
        build_optimizer(groups, OptimizerConfig(name="adam"), 256)


# ---------------------------------------------------------------- mocov2 lives in mocov2.py


def test_mocov2_is_registered_by_the_module_named_after_it():
    module = importlib.import_module("selfsup.methods.mocov2")
    assert methods.METHODS.factory("mocov2") is module.MoCoV2 is methods.MoCoV2
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("selfsup.methods.moco")
    variants = {"dclw": "dcl"}  # a variant registered beside its parent
    for name in methods.names():
        module_name = methods.METHODS.factory(name).__module__.rsplit(".", 1)[-1]
        assert module_name == variants.get(name, name), f"method {name!r} is registered in {module_name}.py"
