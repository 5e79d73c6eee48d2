"""The notebook runner: toc order, parameter precedence, literal parsing, digests."""
import pytest

from ssdlib.reporting import runner


def test_toc_lists_executed_notebooks_in_order():
    names = runner.toc_notebooks()
    assert names and names.index("theory") < names.index("solver")


def test_every_toc_notebook_has_a_source_and_profiles_for_each_scale():
    profiles = runner.load_profiles()
    for name in runner.toc_notebooks():
        assert runner.source_of(name, profiles).exists()
        for scale in runner.SCALES:
            assert runner.parameters_for(name, scale, profiles)["scale"] == scale


def test_parameter_precedence():
    profiles = {"common": {"cpu": {"a": 1, "b": 1}},
                "nb": {"parameters": {"b": 5, "d": 4}, "cpu": {"b": 2, "c": 2}}}
    params = runner.parameters_for("nb", "cpu", profiles, {"c": 3})
    assert params == {"scale": "cpu", "a": 1, "b": 2, "c": 3, "d": 4}
    assert runner.parameters_for("nb", "smoke", profiles)["b"] == 5
    with pytest.raises(ValueError, match="unknown scale"):
        runner.parameters_for("nb", "huge", profiles)


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("[1, 2]", [1, 2]), ("None", None),
                                         ("cuda", "cuda")])
def test_parse_value(text, value):
    assert runner.parse_value(text) == value


def test_digest_changes_with_parameters():
    profiles = runner.load_profiles()
    source = runner.source_of("solver", profiles)
    assert runner.run_digest(source, {"a": 1}) != runner.run_digest(source, {"a": 2})


def test_strip_widgets_keeps_other_outputs():
    nb = {"metadata": {"widgets": {"state": {}}}, "cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {runner.WIDGET_MIME: {}, "text/plain": "0%"}},
        {"output_type": "stream", "name": "stdout", "text": "kept"}]}]}
    out = runner.strip_widgets(nb)
    assert "widgets" not in out["metadata"]
    assert out["cells"][0]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "kept"}]
