"""Recipes in JSON/YAML files (uninext_paddle.config_file): loading, command-line override, errors."""
from __future__ import annotations

import argparse

import pytest

from uninext_paddle.config_file import apply_config, load_config_file
from uninext_paddle.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    """A small parser with the kinds of options train.py has."""
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--optimizer", default="adam", choices=("adam", "adamw"))
    p.add_argument("--amp", default="off", choices=("off", "fp16", "bf16"))
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--ema-warmup", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--work-dir", default="work/model")
    p.add_argument("--index", type=int, nargs="+", default=[3])
    p.add_argument("--config", default=None)
    return p


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_json_keys_with_dashes_or_underscores_become_the_defaults(tmp_path):
    path = write(tmp_path, "r.json", '{"batch-size": 64, "lr": 0.001, "optimizer": "adamw", "ema_warmup": true}')
    args = apply_config(parser(), ["--config", path])
    assert (args.batch_size, args.lr, args.optimizer, args.ema_warmup) == (64, 0.001, "adamw", True)
    assert (args.epochs, args.amp, args.ema, args.config) == (100, "off", None, path)  # the rest untouched


def test_yaml_with_yaml_1_2_booleans_lists_and_exponents(tmp_path):
    path = write(tmp_path, "r.yaml", "epochs: 300\nbatch_size: 64\nlr: 5e-4\namp: off\nema: 0.9998\n"
                                     "ema-warmup: true\nprogress: false\nwork-dir: runs/a\nindex: [1, 2]\n")
    args = apply_config(parser(), [f"--config={path}"])
    assert (args.epochs, args.batch_size, args.lr, args.amp, args.ema) == (300, 64, 5e-4, "off", 0.9998)
    assert (args.ema_warmup, args.progress, args.work_dir, args.index) == (True, False, "runs/a", [1, 2])
    assert load_config_file(path)["amp"] == "off"  # not False, as YAML 1.1 would have it


def test_command_line_flags_win_over_the_file(tmp_path):
    path = write(tmp_path, "r.yml", "batch-size: 64\nlr: 0.001\nema: 0.999\n")
    args = apply_config(parser(), ["--batch-size", "32", "--config", path, "--ema", "0.5"])
    assert (args.batch_size, args.lr, args.ema) == (32, 0.001, 0.5)


def test_without_a_config_file_the_parse_is_the_parsers_own():
    assert vars(apply_config(parser(), ["--lr", "0.1"])) == vars(parser().parse_args(["--lr", "0.1"]))


def test_an_empty_yaml_file_changes_nothing(tmp_path):
    path = write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert vars(apply_config(parser(), ["--config", path])) == vars(parser().parse_args(["--config", path]))


def test_unknown_key_names_the_file_and_the_key_with_a_suggestion(tmp_path):
    path = write(tmp_path, "r.yaml", "batchsize: 64\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*'batchsize'.*'batch_size'"):
        apply_config(parser(), ["--config", path])
    for key in ("help", "config"):  # not settings
        with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
            apply_config(parser(), ["--config", write(tmp_path, "k.yaml", f"{key}: x\n")])


@pytest.mark.parametrize("name,text", [("bad.json", '{"lr": 0.1,}'), ("bad.yaml", "lr: [0.1\n"),
                                       ("list.yaml", "- lr\n- 0.1\n")])
def test_a_file_that_does_not_parse_to_a_mapping_names_the_file(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        apply_config(parser(), ["--config", path])


def test_a_missing_file_and_a_key_set_twice_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config_file(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="twice"):
        load_config_file(write(tmp_path, "twice.json", '{"batch_size": 1, "batch-size": 2}'))


@pytest.mark.parametrize("text,key", [("epochs: 1.5", "epochs"), ("epochs: true", "epochs"), ("lr: fast", "lr"),
                                      ("amp: fp32", "amp"), ("ema-warmup: 'yes'", "ema_warmup"),
                                      ("index: 3", "index"), ("index: [1, x]", "index"), ("lr: null", "lr"),
                                      ("work_dir: {a: 1}", "work_dir")])
def test_a_value_of_the_wrong_kind_names_the_file_and_the_key(tmp_path, text, key):
    path = write(tmp_path, "r.yaml", text + "\n")
    with pytest.raises(ConfigError, match=rf"'{key}' in the config file .*r\.yaml"):
        apply_config(parser(), ["--config", path])


def test_null_is_allowed_where_the_default_is_none(tmp_path):
    args = apply_config(parser(), ["--config", write(tmp_path, "r.yaml", "ema: null\nprogress: null\n")])
    assert args.ema is None and args.progress is None
