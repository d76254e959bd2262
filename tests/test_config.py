"""Config loading: defaults, files, flags, overrides and the errors for bad keys and values."""
from __future__ import annotations

import pytest

from selfsup.config import load, packaged_recipes
from selfsup import backbones
from selfsup.backbones.export import export_backbone
from selfsup.errors import ConfigError, SelfSupError, UnknownNameError


def test_defaults_file_flags_and_overrides_layer_in_order(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("method: {name: simclr, temperature: 0.3}\nepochs: 7\noptimizer: {lr: 0.5}\n")
    cfg = load(cfg_file, flags={"epochs": 9, "data.name": "digits"}, overrides=["optimizer.lr=0.25", "method.temperature=0.2"])
    assert cfg.epochs == 9  # flag beats file
    assert cfg.optimizer.lr == 0.25  # override beats file
    assert cfg.method == {"name": "simclr", "temperature": 0.2}
    assert cfg.optimizer.momentum == 0.9  # default kept


def test_new_method_name_drops_the_old_methods_options(tmp_path):
    cfg = load("cifar10/simclr", flags={"method.name": "byol"})
    assert cfg.method == {"name": "byol"}


def test_every_packaged_recipe_loads_and_validates(tmp_path):
    names = packaged_recipes()
    assert {"digits/simclr", "cifar10/simclr", "fashion_mnist/simclr"} <= set(names)
    teacher = export_backbone(backbones.get("resnet_tiny", width=4), tmp_path / "teacher.safetensors")
    for name in names:
        # a distillation recipe names a placeholder teacher run the user replaces
        cfg = load(name, overrides=[f"method.teacher={teacher}"] if "distillation" in name else [])
        assert cfg.method["name"] in name
    with pytest.raises(SelfSupError, match="No such file: runs/teacher"):
        load("cifar10/distillation")


def test_unknown_keys_name_the_key_and_suggest(tmp_path):
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr'.*Did you mean: lr"):
        load(overrides=["optimizer.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'epoch'.*Did you mean: epochs"):
        load(overrides=["epoch=3"])
    with pytest.raises(ConfigError, match=r"temprature.*Did you mean: temperature"):
        load(overrides=["method.temprature=0.1"])
    with pytest.raises(UnknownNameError, match="Did you mean: byol"):
        load(overrides=["method.name=byl"])
    with pytest.raises(UnknownNameError, match="backbone 'resnet19'"):
        load(overrides=["backbone.name=resnet19"])
    with pytest.raises(UnknownNameError, match="data set 'cifar11'"):
        load(overrides=["data.name=cifar11"])


def test_wrong_types_and_ranges_are_rejected():
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        load(overrides=["epochs=ten"])
    with pytest.raises(ConfigError, match=r"'optimizer\.lr' must be > 0"):
        load(overrides=["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match=r"'optimizer\.momentum' must be in \[0, 1\)"):
        load(overrides=["optimizer.momentum=1.5"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load(overrides=["epochs"])


def test_missing_config_file_suggests_recipes():
    with pytest.raises(ConfigError, match="cifar10/simclr"):
        load("cifar10/simclrr")


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(evil)


def test_values_the_method_or_recipe_reject_stop_before_any_work():
    with pytest.raises(ConfigError, match="section 'method'.*temperature"):
        load(overrides=["method.temperature=0"])
    with pytest.raises(ConfigError, match="section 'method'.*momentum"):
        load(overrides=["method.name=byol", "method.base_momentum=1.5"])
    with pytest.raises(ConfigError, match="section 'augment'.*hflip_p"):
        load(overrides=["augment.recipe=simclr", "augment.hflip_p=2"])
    with pytest.raises(ConfigError, match="section 'backbone'"):
        load(overrides=["backbone.name=resnet_small", "backbone.width=0"])
    cfg = load(overrides=["method.name=barlowtwins"])  # paper-sized heads cost nothing on the meta device
    assert cfg.method["name"] == "barlowtwins"
