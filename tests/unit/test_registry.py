"""One registry type for models, methods, report tables, context rankings and video sources: a name is registered
once, an unknown name is refused with the registered names, and each package's built-ins are there as soon as that
package alone is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from condi_pipe.methods.adaptive_budgets import STOPPING_RULES, register_stopping_rule
from condi_pipe.methods.context_rankings import CONTEXT_RANKINGS, register_context_ranking
from condi_pipe.methods.registry import METHODS, register_method
from condi_pipe.models import MODELS, register_model
from condi_pipe.registry import Registry, UnknownName, first_docstring_line
from condi_pipe.report.registry import TABLES, register_table
from condi_pipe.video.sources import SOURCES, SourceError, plan_source


def red():
    """The first colour."""


def _colours() -> Registry:
    colours = Registry("colour")
    colours.register("red", red)
    colours.register("green", "#0f0")
    colours.register("blue", "#00f")
    return colours


# ------------------------------------------------------------------------------------------------ the generic type


def test_both_forms_register_and_return_the_item():
    shapes = Registry("shape")

    @shapes.register("circle")
    def circle():
        return "round"

    assert circle() == "round" and shapes.get("circle") is circle  # the decorator returns what it decorates
    square = object()
    assert shapes.register("square", square) is square and shapes.get("square") is square


def test_a_name_registered_twice_is_refused_and_the_first_item_kept():
    colours = _colours()
    with pytest.raises(ValueError, match=r"^colour 'green' is registered twice$"):
        colours.register("green", "#00ff00")
    with pytest.raises(ValueError, match=r"^colour 'red' is registered twice$"):
        colours.register("red")(lambda: None)
    assert colours.get("green") == "#0f0" and colours.get("red") is red and len(colours) == 3


def test_an_unknown_name_lists_the_choices_in_registration_order():
    with pytest.raises(UnknownName, match=r"^unknown colour 'mauve'; choose one of: red, green, blue$") as raised:
        _colours().get("mauve")
    assert isinstance(raised.value, ValueError) and not isinstance(raised.value, KeyError)
    assert (raised.value.kind, raised.value.name, raised.value.choices) == ("colour", "mauve", ("red", "green", "blue"))
    with pytest.raises(UnknownName, match=r"^unknown colour 'red'; choose one of: \(none registered\)$"):
        Registry("colour").get("red")
    with pytest.raises(UnknownName, match=r"unknown colour \['red'\]"):
        _colours().get(["red"])  # an unhashable name is just unknown


def test_names_items_and_iteration_keep_registration_order():
    colours = _colours()
    assert colours.names() == ("red", "green", "blue") == tuple(colours)
    assert colours.items() == (("red", red), ("green", "#0f0"), ("blue", "#00f"))
    assert colours.values() == (red, "#0f0", "#00f")
    assert "green" in colours and "mauve" not in colours and ["red"] not in colours
    assert repr(colours) == "Registry('colour': red, green, blue)"


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match=r"a colour name must be a non-empty string, got ''"):
        Registry("colour").register("", "#fff")
    with pytest.raises(ValueError, match=r"a colour name must be a non-empty string, got 3"):
        Registry("colour").register(3, "#fff")


def test_unregister_returns_the_item_and_refuses_unknown_names():
    colours = _colours()
    assert colours.unregister("green") == "#0f0" and colours.names() == ("red", "blue")
    with pytest.raises(UnknownName, match=r"unknown colour 'green'; choose one of: red, blue"):
        colours.unregister("green")
    colours.register("green", "#0f0")  # the name is free again, now last
    assert colours.names() == ("red", "blue", "green")


def test_temporarily_adds_a_new_name_for_the_block_only():
    colours = _colours()
    with colours.temporarily("mauve", "#e0b0ff") as item:
        assert item == "#e0b0ff" and colours.names() == ("red", "green", "blue", "mauve")
        with pytest.raises(ValueError, match="colour 'mauve' is registered twice"):
            colours.register("mauve", "#fff")
    assert colours.names() == ("red", "green", "blue")


def test_temporarily_shadows_a_registered_name_and_restores_it_in_place_even_after_an_error():
    colours = _colours()
    with pytest.raises(RuntimeError, match="inside the block"):
        with colours.temporarily("green", "#00ff00"):
            assert colours.get("green") == "#00ff00" and colours.names() == ("red", "blue", "green")
            raise RuntimeError("inside the block")
    assert colours.items() == (("red", red), ("green", "#0f0"), ("blue", "#00f"))


def test_first_docstring_line():
    assert first_docstring_line(red) == "The first colour."
    assert first_docstring_line(lambda: None) == ""

    def blank():
        """   """

    assert first_docstring_line(blank) == ""


def test_the_registry_module_loads_no_library():
    code = ("import sys, condi_pipe.registry; "
            "loaded = [m for m in ('numpy', 'torch') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- each registry's built-ins, loaded one way

# (what a fresh interpreter imports and prints, the names it must print)
BUILTINS = {
    "models": ("import condi_pipe.models as p; names = p.MODELS.names()",
               ("r3d_18", "r2plus1d_18", "mc3_18", "resnext101_3d", "resnet10_3d_small", "resnet10_3d_motion",
                "resnet10_3d_motion_tiny", "resnet10_3d_motion_skim", "shufflenetv2_3d", "mobilenetv2_3d")),
    "methods": ("import condi_pipe.methods as p; names = p.method_names(); "
                "assert 'torch' not in sys.modules, 'torch was imported'",
                ("condi-sr", "bce-conf", "st-ent", "st-conf", "trivial-mt", "fewer-frames", "uniform-k", "sc-sampler")),
    "tables": ("import condi_pipe.report as p; names = p.table_names()",
               ("3", "4", "accuracy", "oracle", "confidence", "sgs", "kinds", "sweep", "pairwise", "adaptive")),
    "context rankings": ("import condi_pipe.methods.context_rankings as p; names = p.CONTEXT_RANKINGS.names()",
                         ("consensus", "z-consensus")),
    "stopping rules": (("import condi_pipe.methods.adaptive_budgets as p; names = p.STOPPING_RULES.names(); "
                        "assert 'torch' not in sys.modules, 'torch was imported'"), ("z-threshold", "confident-mean")),
    "sources": ("import condi_pipe.video.sources as p; names = p.SOURCES.names()",
                ("ucf101", "hmdb51", "kinetics", "ssv2", "folder", "csv")),
}


@pytest.mark.parametrize("registry", BUILTINS)
def test_the_builtins_are_registered_once_their_package_is_imported(registry):
    code, expected = BUILTINS[registry]
    done = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(','.join(names))"], check=True,
                          capture_output=True, text=True)
    assert tuple(done.stdout.strip().split(",")) == expected


def _noop(*args, **kwargs):
    """A stand-in that must never be registered."""


# (the registry, a built-in name, registering that name again through the registry's public function)
DUPLICATES = {
    "models": (MODELS, "shufflenetv2_3d", lambda: register_model("shufflenetv2_3d", role="student")(_noop)),
    "methods": (METHODS, "condi-sr", lambda: register_method(
        "condi-sr", display="Again", level="clip", ranking="entropy", needs_confidence_head=False)(_noop)),
    "tables": (TABLES, "3", lambda: register_table("3", summary="again")(_noop)),
    "context rankings": (CONTEXT_RANKINGS, "consensus",
                         lambda: register_context_ranking("consensus", needs_confidence=False)(_noop)),
    "stopping rules": (STOPPING_RULES, "z-threshold", lambda: register_stopping_rule(
        "z-threshold", statistic="again", continue_while="below", decision_values=_noop)(_noop)),
    "sources": (SOURCES, "ucf101", lambda: SOURCES.register("ucf101")(_noop)),
}


@pytest.mark.parametrize("registry", DUPLICATES)
def test_a_builtin_name_registered_again_is_refused(registry):
    table, name, register_again = DUPLICATES[registry]
    before = table.items()
    with pytest.raises(ValueError, match=rf"^{table.kind} '{name}' is registered twice$"):
        register_again()
    assert table.items() == before


def test_the_run_own_ranking_name_is_reserved():
    with pytest.raises(ValueError, match="context ranking 'own' is the name of the run's own ranking"):
        register_context_ranking("own", needs_confidence=False)
    assert "own" not in CONTEXT_RANKINGS


def test_an_unknown_source_is_a_source_error_listing_the_sources(tmp_path):
    with pytest.raises(SourceError, match=r"^unknown source 'ucf'; choose one of: ucf101, hmdb51, kinetics, ssv2"):
        plan_source("ucf", tmp_path)
