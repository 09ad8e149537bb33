"""One policy per rule (nasforge.rules): every registry refuses a duplicate name, every config
read from a dict refuses an unknown key with one line naming it."""
import ast
import dataclasses
from pathlib import Path

import pytest

from nasforge.controllers import SEARCHERS, RandomSearch, get_searcher, register_searcher
from nasforge.export import EXPORTERS, register_exporter
from nasforge.oneshot import SupernetError
from nasforge.oneshot.choices import FAMILIES, register_family
from nasforge.predictors import PREDICTORS, register_predictor
from nasforge.predictors.encodings import ENCODINGS, register_encoding
from nasforge.oneshot.methods import DEFAULT_RECIPES, METHODS, Spos, method_config, register_method
from nasforge.registry import (ACTIVATIONS, COMBINES, OPS, register_activation, register_combine,
                               register_op)
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.objectives import METRICS, STATIC_METRICS, register_static_metric
from nasforge.search_spaces import (SPACES, NasBench201Space, NasNetSpace, SearchSpace,
                                    register_space)
from nasforge.train.recipes import RECIPES, get_recipe, register_recipe
from nasforge.transfer import ModelSpec, TransferConfig, TransferError
from nasforge.zoo import ZOO
from nasforge.zoo.registry import register_model

# registry name -> (table, a name it holds, a call registering a *different* entry under it)
REGISTRIES = {
    "op": (OPS, "sep_conv_3x3",
           lambda: register_op("sep_conv_3x3")(lambda c_in, c_out, stride: None)),
    "combine": (COMBINES, "add",
                lambda: register_combine(dataclasses.replace(COMBINES["concat"], name="add"))),
    "zoo": (ZOO, "nasnet_a",
            lambda: register_model(dataclasses.replace(ZOO["resnet18"], name="nasnet_a"))),
    "recipe": (RECIPES, "smoke",
               lambda: register_recipe(get_recipe("smoke").replace(epochs=99))),
    "exporter": (EXPORTERS, "json",
                 lambda: register_exporter("json", ".txt")(lambda source, path: None)),
    "searcher": (SEARCHERS, "rl", lambda: register_searcher("rl", RandomSearch)),
    "space": (SPACES, "nasnet", lambda: register_space("nasnet", lambda **kw: NasNetSpace(2))),
    "metric": (METRICS, "params",
               lambda: register_static_metric("params", lambda arch, setting: 0.0)),
    "one-shot method": (METHODS, "darts", lambda: register_method("darts", Spos, "smoke")),
    "supernet family": (FAMILIES, NasBench201Space,
                        lambda: register_family(dataclasses.replace(
                            FAMILIES[NasBench201Space], name="another"))),
    "activation": (ACTIVATIONS, "relu",
                   lambda: register_activation("relu")(lambda inplace: None)),
    "predictor": (PREDICTORS, "boosted_trees",
                  lambda: register_predictor("boosted_trees", PREDICTORS["mlp_ensemble"])),
    "encoding": (ENCODINGS[SearchSpace], "onehot",
                 lambda: register_encoding(SearchSpace, "onehot", lambda space, archs: None)),
}
# the tables a registration also writes to: a refused one leaves them as they were
COMPANIONS = {"metric": STATIC_METRICS, "one-shot method": DEFAULT_RECIPES}


@pytest.mark.parametrize("registry", sorted(REGISTRIES))
def test_registry_refuses_a_duplicate_name_and_keeps_the_original(registry):
    table, name, register_again = REGISTRIES[registry]
    original = table[name]
    companion = COMPANIONS.get(registry, {})
    companion_before = dict(companion)
    try:
        with pytest.raises(ValueError, match=f"{name!r} is already registered"):
            register_again()
        assert table[name] is original
        assert companion == companion_before
    finally:  # a registry without the rule must not leak the replacement into other tests
        table[name] = original
        companion.clear()
        companion.update(companion_before)


def _register_functions() -> set[str]:
    """Every ``register_*`` function defined in the library (nasforge, controllers,
    search_spaces), found in the source: a new registry cannot be added untested."""
    root = Path(__file__).resolve().parents[1]
    names = set()
    for folder in ("nasforge", "controllers", "search_spaces"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef) and node.name.startswith("register_"):
                    names.add(node.name)
    return names


def test_every_register_function_is_covered():
    covered = set().union(*(fn.__code__.co_names for _, _, fn in REGISTRIES.values()))
    missing = _register_functions() - covered
    assert _register_functions() and not missing, f"add to REGISTRIES: {sorted(missing)}"


def test_a_new_name_registers():
    """The duplicate check is about the name: a fresh one is accepted (and removed again)."""
    try:
        register_recipe(get_recipe("smoke").replace(name="rules-test-recipe"))
        assert get_recipe("rules-test-recipe").schedule.epochs == \
            get_recipe("smoke").schedule.epochs
    finally:
        RECIPES.pop("rules-test-recipe", None)


def _searcher_config(data):
    return get_searcher("evolution", "nasnet", dedup=False, **data).config


# config -> (a valid dict of it, from_dict, the error the CLI turns into one line + exit 2)
CONFIGS = {
    "search": (SearchConfig(trials=3).to_dict(), SearchConfig.from_dict, SearchError),
    "transfer": (dataclasses.asdict(TransferConfig(cell="c.json", data="d")),
                 TransferConfig.from_dict, TransferError),
    "recipe": (get_recipe("smoke").to_dict(), type(get_recipe("smoke")).from_dict, ValueError),
    "transfer-model": (ModelSpec("m", "baseline", "resnet18", None).to_dict(),
                       ModelSpec.from_dict, TransferError),
    "searcher": ({"population_size": 10, "sample_size": 3}, _searcher_config, TypeError),
    "one-shot method": ({"candidates": 20}, lambda data: method_config("spos", data),
                        SupernetError),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_config_refuses_an_unknown_key_in_one_line(config):
    data, from_dict, error = CONFIGS[config]
    from_dict(data)  # the valid dict is accepted
    with pytest.raises(error) as info:
        from_dict({**data, "bogus_key": 1})
    assert "unknown key 'bogus_key'" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("config", ["search", "transfer", "recipe", "transfer-model"])
def test_config_round_trips_through_its_dict(config):
    data, from_dict, _ = CONFIGS[config]
    rebuilt = from_dict(data)
    as_dict = rebuilt.to_dict() if hasattr(rebuilt, "to_dict") else dataclasses.asdict(rebuilt)
    assert from_dict(as_dict) == rebuilt
