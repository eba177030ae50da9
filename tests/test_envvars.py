"""The parsers name the variable in every error; a generated block is found or refused."""

from __future__ import annotations

import pytest

from receiver.envvars import (
    Var,
    boolean,
    choice,
    gs_source,
    optional,
    regenerate,
    size,
    text,
    whole,
)
from receiver.errors import ConfigError
from receiver.vocabulary import DeleteMode


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7), ("4Ki", 4096), ("1Gi", 1024**3), ("2 Mi", 2 * 1024**2), ("1Ti", 1024**4)],
)
def test_sizes_take_kubernetes_binary_units(value, expected):
    assert size(minimum=1)("RECEIVER_X", value) == expected


@pytest.mark.parametrize("value", ["1G", "1.5Gi", "-1", "Gi", "1gi"])
def test_a_size_in_other_units_is_refused_with_the_units_it_takes(value):
    with pytest.raises(ConfigError, match=r"^RECEIVER_X has value .*suffix Ki, Mi, Gi or Ti"):
        size(minimum=1)("RECEIVER_X", value)


def test_an_unset_optional_value_is_none_and_a_set_one_is_parsed():
    parse = optional(size(minimum=1))
    assert (parse("RECEIVER_X", ""), parse("RECEIVER_X", "1Ki")) == (None, 1024)


def test_modes_and_booleans_are_read_in_any_case_and_a_bad_one_lists_the_choices():
    assert choice(DeleteMode)("RECEIVER_X", "Remove") is DeleteMode.REMOVE
    assert (boolean("RECEIVER_X", "YES"), boolean("RECEIVER_X", "0")) == (True, False)
    with pytest.raises(ConfigError, match="^RECEIVER_X has value 'drop': must be one of ignore, "):
        choice(DeleteMode)("RECEIVER_X", "drop")


def test_whole_numbers_keep_within_their_bounds():
    port = whole(minimum=1, maximum=65535)
    assert port("PORT", "65535") == 65535
    for bad, reason in (("0", "at least 1"), ("65536", "at most 65535"), ("8o", "whole number")):
        with pytest.raises(ConfigError, match=f"^PORT has value .*{reason}"):
            port("PORT", bad)


def test_a_source_splits_into_bucket_and_a_prefix_ending_in_a_slash():
    assert gs_source("S", "gs://models/exports//") == ("models", "exports/")
    assert gs_source("S", "gs://models") == ("models", "")


def test_blank_is_unset_and_a_missing_required_value_gets_its_meaning_without_markup():
    var = Var("RECEIVER_X", None, text, "the `thing` it names")
    assert Var("RECEIVER_Y", "dflt", text, "y").read({"RECEIVER_Y": "  "}) == "dflt"
    with pytest.raises(ConfigError) as missing:
        var.read({"RECEIVER_X": " "})
    assert str(missing.value) == "RECEIVER_X is required: the thing it names"


def test_the_shown_default_says_required_unset_or_the_value():
    shown = [Var("A", default, text, "").shown_default for default in (None, "", "5")]
    assert shown == ["(required)", "(unset)", "`5`"]
    assert Var("A", "", text, "", shown="(empty)").shown_default == "(empty)"


def test_generated_blocks_are_replaced_and_a_table_without_its_block_is_refused():
    page = "intro\n<!-- generated: t (by hand) -->\nold\n<!-- end of generated t -->\nend\n"
    assert regenerate(page, {"t": "new\n"}) == page.replace("old\n", "new\n")
    with pytest.raises(ValueError, match="no generated block for u"):
        regenerate(page, {"t": "new\n", "u": "x\n"})
