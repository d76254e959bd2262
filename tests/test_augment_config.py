"""Views written in a YAML config (``augment.views``), with a user's op, through the loader and training."""
from __future__ import annotations

import pytest
import torch
import yaml

import selfsup
from selfsup.augment import RandomOp, register_op
from selfsup.config import load
from selfsup.errors import ConfigError

SEEN: list[tuple[int, ...]] = []


@register_op("test_config_checkerboard")
class Checkerboard(RandomOp):
    """Overlay a checkerboard of period ``period`` px with probability p: a user's op, defined in a test."""

    def __init__(self, p: float = 0.5, period: int = 2) -> None:
        self.p, self.period = p, period
        self.__post_init__()

    def transform(self, images, params):
        SEEN.append(tuple(images.shape))
        h, w = images.shape[-2:]
        rows, cols = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
        board = ((rows.view(-1, 1) // self.period + cols.view(1, -1) // self.period) % 2).to(images.dtype)
        return 0.5 * images + 0.5 * board


AUGMENT = {
    "size": 16,
    "views": [
        {"count": 2, "ops": [
            {"name": "random_resized_crop", "scale": [0.3, 1.0]},
            "horizontal_flip",
            {"name": "rotate90", "turns": [0, 1, 2, 3]},
            {"name": "test_config_checkerboard", "p": 0.5, "period": 4},
            {"name": "random_erasing", "p": 0.25},
        ]},
    ],
}
TINY = {
    "method": {"name": "simclr", "proj_output_dim": 16},
    "backbone": {"name": "resnet_tiny", "width": 4},
    "data": {"name": "digits", "eval_split": "none"},
    "epochs": 1, "batch_size": 256, "precision": "32-true", "progress_bar": False,
    "monitor": {"knn_every": 0},
}


def write(tmp_path, augment):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**TINY, "augment": augment, "output_dir": str(tmp_path / "runs")}))
    return path


def test_a_yaml_recipe_of_ops_with_a_users_op_trains(tmp_path):
    config = load(write(tmp_path, AUGMENT), overrides=["name=custom_views"])
    assert config.augment["recipe"] == "custom"  # implied by augment.views
    SEEN.clear()
    result = selfsup.training.train(config)
    assert SEEN and all(shape[1:] == (1, 16, 16) for shape in SEEN)  # ran inside the views, on 16 px crops
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["augment"]["recipe"] == "custom" and saved["augment"]["views"][0]["count"] == 2
    # the same recipe as a plain-loop user builds it, from the saved config
    views = selfsup.augment.get("custom", **{k: v for k, v in saved["augment"].items() if k != "recipe"},
                                mean=(0.5,), std=(0.25,))
    out = views(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    assert [v.shape for v in out] == [(4, 1, 16, 16)] * 2


@pytest.mark.parametrize("views, message", [
    ([{"ops": [{"name": "random_resized_crop"}, {"name": "test_config_checkerbord"}]}],
     r"Config section 'augment': View recipe 'custom': views\[0\]\.ops\[1\]: Unknown augmentation op "
     r"'test_config_checkerbord'\. Did you mean: test_config_checkerboard"),
    ([{"ops": [{"name": "random_resized_crop", "scael": [0.2, 1]}]}],
     r"views\[0\]\.ops\[0\]: augmentation op 'random_resized_crop' has no option 'scael'\. Did you mean: scale"),
    ([{"ops": [{"name": "test_config_checkerboard", "p": 1.5}]}], r"test_config_checkerboard\.p = 1\.5 is invalid"),
    ([{"ops": ["random_resized_crop"], "cout": 2}], r"views\[0\] has no key 'cout'\. Did you mean: count"),
])
def test_bad_yaml_views_stop_at_load_naming_the_entry(tmp_path, views, message):
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, {"size": 16, "views": views}))


def test_views_and_a_named_recipe_contradict_each_other(tmp_path):
    with pytest.raises(ConfigError, match=r"'augment\.views' and 'augment\.recipe' \('simclr'\) contradict"):
        load(write(tmp_path, {**AUGMENT, "recipe": "simclr"}))
