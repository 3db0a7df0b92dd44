"""space: what a sweep may vary, values and ranges, duplicates, and the float model each point makes."""

from __future__ import annotations

import pytest

from tasks.errors import ParamsError
from tasks.search import space
from tests.conftest import REPO, repo_params

PARAMS = REPO / "params.yaml"


def test_values_are_yaml_lists_and_ranges_are_low_colon_high() -> None:
    parsed = space.parse_space(
        ["prune.final_sparsity=0.5,0.75", "quantize.method=ptq,qat", "train.dense_units=8:64", "train.alpha=0.35:1"]
    )
    by_key = {axis.key: axis for axis in parsed.axes}
    assert by_key["prune.final_sparsity"].choices == (0.5, 0.75)
    assert by_key["quantize.method"].choices == ("ptq", "qat")
    assert (by_key["train.dense_units"].kind, by_key["train.dense_units"].low, by_key["train.dense_units"].high) == (
        "int",
        8,
        64,
    )
    assert by_key["train.alpha"].kind == "float"  # either end a float: floats
    assert parsed.has_ranges and parsed.keys[0] == "prune.final_sparsity"
    assert parsed.describe().startswith("prune.final_sparsity=0.5,0.75 quantize.method=ptq,qat")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], r"nothing to vary"),
        (["prune.final_sparsity="], r"prune\.final_sparsity: no values"),
        (["prune.final_sparsity=0.5", "prune.final_sparsity=0.6"], r"given twice"),
        (["final_sparsity=0.5"], r"expected section\.key=value"),
        (["prune.final_sparsity=0.9:0.5"], r"a range goes from low to high"),
        (["data.source=digits,folder:x"], r"only data\.image_size and data\.channels may vary"),
    ],
)
def test_a_bad_space_is_one_line(texts: list[str], message: str) -> None:
    with pytest.raises(ParamsError, match=message) as caught:
        space.parse_space(texts)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("gate.min_accuracy=0.5,0.9", "gate"),
        ("registry.auto_promote=true,false", "registry"),
        ("retrain.push=true", "retrain"),
    ],
)
def test_keys_no_trial_reads_are_refused(text: str, section: str) -> None:
    # Before: accepted, the trials came out identical and --apply wrote the loosest gate into params.yaml.
    with pytest.raises(ParamsError, match=rf"cannot vary {section}\.\*") as caught:
        space.parse_space([text])
    assert "\n" not in str(caught.value)


def test_duplicate_values_run_once_and_say_so() -> None:
    # Before: 0.5 twice made two identical trials without a word.
    parsed = space.parse_space(["prune.final_sparsity=0.5,0.5,0.75", "cluster.number_of_clusters=8,16"])
    assert parsed.axes[0].choices == (0.5, 0.75)
    assert len(parsed.notes) == 1 and "0.5 given more than once" in parsed.notes[0]
    grid = space.expand(PARAMS, parsed)
    assert [t.overrides[0] for t in grid.trials] == ["prune.final_sparsity=0.5"] * 2 + ["prune.final_sparsity=0.75"] * 2
    assert grid.notes == list(parsed.notes)
    assert space.parse_space(["cluster.number_of_clusters=8,8.0"]).axes[0].choices == (8,)
    # Values that differ as written but not once validated: 8 and "8" for an integer key.
    merged = space.expand(PARAMS, space.parse_space(['cluster.number_of_clusters=8,"8",16']))
    assert [t.overrides for t in merged.trials] == [
        ("cluster.number_of_clusters=8",),
        ("cluster.number_of_clusters=16",),
    ]
    assert any("is t01 (once validated); it runs once" in note for note in merged.notes)
    assert space.parse_space(["cluster.enabled=true,1"]).axes[0].choices == (True, 1)  # not the same setting


def test_every_grid_point_is_checked_before_any_runs() -> None:
    grid = space.parse_space(["prune.final_sparsity=0.5,0.9", "train.dense_units=16,32"])
    trials = space.expand(PARAMS, grid).trials
    assert [t.overrides for t in trials] == [  # the whole product, the first key slowest
        ("prune.final_sparsity=0.5", "train.dense_units=16"),
        ("prune.final_sparsity=0.5", "train.dense_units=32"),
        ("prune.final_sparsity=0.9", "train.dense_units=16"),
        ("prune.final_sparsity=0.9", "train.dense_units=32"),
    ]
    assert trials[1].float_overrides == ("train.dense_units=32",) and trials[1].value("train.dense_units") == "32"
    with pytest.raises(ParamsError, match=r"prune\.final_sparsity.*\(in grid point prune\.final_sparsity=1\.5\)"):
        space.expand(PARAMS, space.parse_space(["prune.final_sparsity=0.5,1.5"]))
    with pytest.raises(ParamsError, match=r"unknown key 'prune\.sparsity'"):
        space.expand(PARAMS, space.parse_space(["prune.sparsity=0.5"]))
    with pytest.raises(ParamsError, match=r"a range is for a sampler"):
        space.expand(PARAMS, space.parse_space(["prune.final_sparsity=0.5:0.9"]))


def test_a_samplers_space_is_checked_at_both_ends_of_each_range() -> None:
    space.check_space(PARAMS, space.parse_space(["prune.final_sparsity=0.5:0.9", "train.alpha=0.35,0.5"]))
    with pytest.raises(ParamsError, match=r"final_sparsity.*\(in -S prune\.final_sparsity=0\.5:1\.5\)"):
        space.check_space(PARAMS, space.parse_space(["prune.final_sparsity=0.5:1.5"]))
    space.check_space(PARAMS, space.parse_space(["prune.method=magnitude,channels", "prune.channel_fraction=0.3:0.7"]))
    with pytest.raises(ParamsError, match=r"prune\.method: .*\(got 'filters'\)"):
        space.check_space(PARAMS, space.parse_space(["prune.method=magnitude,filters"]))


def test_one_float_model_per_distinct_data_and_train_settings() -> None:
    base = repo_params()
    same = repo_params(["prune.final_sparsity=0.5"])  # not a float setting
    wider = repo_params(["train.dense_units=64"])
    assert space.float_key(base, "code") == space.float_key(same, "code")
    assert space.float_key(base, "code") != space.float_key(wider, "code")
    assert space.float_key(base, "code") != space.float_key(base, "other code")


def test_an_axis_no_trial_reads_is_refused() -> None:
    """prune.channel_fraction under magnitude pruning (or a sparsity under channels) would make identical trials."""
    with pytest.raises(
        ParamsError, match=r"-S prune\.channel_fraction: no trial reads it .*add -S prune\.method=channels"
    ):
        space.check_space(PARAMS, space.parse_space(["prune.channel_fraction=0.2:0.7"]))
    with pytest.raises(
        ParamsError, match=r"-S prune\.final_sparsity: no trial reads it .*add -S prune\.method=magnitude"
    ):
        space.expand(PARAMS, space.parse_space(["prune.final_sparsity=0.5,0.6", "prune.method=channels"]))
    # Read by the trials of one method, the axis stands.
    space.check_space(PARAMS, space.parse_space(["prune.channel_fraction=0.2:0.7", "prune.method=channels"]))
    crossed = space.expand(
        PARAMS, space.parse_space(["prune.method=magnitude,channels", "prune.channel_fraction=0.3,0.5"])
    )
    # Magnitude ignores the fraction: its two grid points are one trial (they ran twice, identical).
    assert [t.overrides for t in crossed.trials] == [
        ("prune.method=magnitude", "prune.channel_fraction=0.3"),
        ("prune.method=channels", "prune.channel_fraction=0.3"),
        ("prune.method=channels", "prune.channel_fraction=0.5"),
    ]
    assert crossed.notes == [
        "grid point prune.method=magnitude prune.channel_fraction=0.5 is t01 "
        "(prune.method: magnitude ignores prune.channel_fraction); it runs once"
    ]
    # The same with the stage switched off: prune.enabled false reads no other prune key.
    off = space.expand(PARAMS, space.parse_space(["prune.enabled=false,true", "prune.final_sparsity=0.5,0.8"]))
    assert len(off.trials) == 3 and "prune.enabled: false ignores prune.final_sparsity" in off.notes[0]
