"""params.yaml: loaded once, typed, and every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ParamsError
from tasks.params import check_cron, check_overrides, load_params, parse_override, write_overrides
from tests.conftest import REPO, repo_params


def test_project_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "digits"
    assert 0 < params.prune.final_sparsity < 1
    assert params.flat()["prune.final_sparsity"] == params.prune.final_sparsity


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("prune.final_sparsity=1.5", "prune.final_sparsity"),
        ("train.epochs=-3", "train.epochs"),
        ("prune.sparsity=0.5", "prune.sparsity"),
        ("quantize.io_dtype=float32", "quantize.io_dtype"),
        ("data.source=s3://bucket", "data.source"),
        ("prune.initial_sparsity=0.95", "initial_sparsity"),
        ("nonsense.key=1", "nonsense"),
    ],
)
def test_bad_values_name_the_key(override: str, named: str) -> None:
    with pytest.raises(ParamsError) as caught:
        repo_params([override])
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_unknown_key_lists_the_allowed_ones() -> None:
    with pytest.raises(ParamsError, match=r"unknown key 'prune.sparsity' \(allowed: enabled, method, initial_sparsity"):
        repo_params(["prune.sparsity=0.5"])


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text().replace("  seed: 42\n", "", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"missing key 'data\.seed'"):
        load_params(tmp_path / "params.yaml")


def test_params_are_frozen() -> None:
    params = repo_params()
    with pytest.raises(ValueError):
        params.prune.final_sparsity = 0.1  # type: ignore[misc]


def test_override_values_are_parsed_as_yaml() -> None:
    assert parse_override("prune.final_sparsity=0.6") == ("prune", "final_sparsity", 0.6)
    assert parse_override("prune.enabled=false") == ("prune", "enabled", False)
    assert parse_override("data.source=folder:/x") == ("data", "source", "folder:/x")
    with pytest.raises(ParamsError, match=r"section\.key=value"):
        parse_override("final_sparsity=0.6")


def test_write_overrides_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    params = write_overrides(path, ["prune.final_sparsity=0.6"])
    text = path.read_text()
    assert params.prune.final_sparsity == 0.6
    assert load_params(path).prune.final_sparsity == 0.6
    assert "# fraction of zero weights" in text


def test_invalid_override_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    before = path.read_bytes()
    with pytest.raises(ParamsError):
        write_overrides(path, ["prune.final_sparsity=0.6", "train.epochs=0"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_override_changes_only_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    path.chmod(0o640)
    before = path.read_text().splitlines()
    write_overrides(path, ["prune.final_sparsity=0.5"])
    after = path.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(changed) == 1 and "final_sparsity: 0.5" in changed[0][1]
    assert "compiler: null" in path.read_text()  # nulls stay `null`, not an empty value
    assert 'cron: "0 3 * * *"' in path.read_text()  # quotes stay
    assert path.stat().st_mode & 0o777 == 0o640  # the file's mode is kept


def test_an_error_in_the_file_names_the_file_not_an_override(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("epochs: 30", "epochs: -1", 1))
    with pytest.raises(ParamsError, match=r"^params\.yaml: train\.epochs"):
        check_overrides(path, [])
    with pytest.raises(ParamsError, match=r"^params\.yaml: train\.epochs"):
        check_overrides(path, ["prune.final_sparsity=0.5"])
    good = tmp_path / "good.yaml"
    good.write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ParamsError, match=r"^-S: prune\.final_sparsity"):
        check_overrides(good, ["prune.final_sparsity=2"])


@pytest.mark.parametrize("cron", ["a b c d e", "61 * * * *", "0 3 * *", "0 3 * * * *", "R * * * *", "0 25 * * *"])
def test_a_cron_prefect_cannot_schedule_is_refused(cron: str) -> None:
    with pytest.raises(ParamsError, match=r"retrain\.cron: .* is not a 5-field cron expression"):
        repo_params([f"retrain.cron={cron}"])
    with pytest.raises(ParamsError, match=r"^--cron: "):
        check_cron(cron)


def test_valid_crons_pass() -> None:
    for cron in ("0 3 * * *", "*/30 * * * *", "0 3 * * 1-5", "15 2 1 * *"):
        assert check_cron(cron) == cron


def test_prune_method_and_channel_keys_are_checked() -> None:
    assert repo_params(["prune.method=channels"]).prune.method == "channels"
    for override, named in (
        ("prune.method=filters", "prune.method"),
        ("prune.channel_fraction=1.0", "prune.channel_fraction"),
        ("prune.channel_fraction=-0.1", "prune.channel_fraction"),
        ("prune.channel_multiple=0", "prune.channel_multiple"),
        # The other method's keys are still range-checked: a typo is an error whichever runs.
        ("prune.final_sparsity=1.5", "prune.final_sparsity"),
    ):
        with pytest.raises(ParamsError, match=named):
            repo_params(["prune.method=channels", override])


def test_a_rule_between_keys_applies_only_to_the_method_that_reads_them() -> None:
    """The sparsity ramp is magnitude's: channel pruning ignores it, so it refuses nothing there."""
    ramp = ["prune.initial_sparsity=0.95", "prune.final_sparsity=0.5"]
    with pytest.raises(ParamsError, match="must not exceed final_sparsity"):
        repo_params(ramp)
    assert repo_params([*ramp, "prune.method=channels"]).prune.initial_sparsity == 0.95


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.model", "cnn"),
        ("train.model", "file:mine.keras"),
        ("train.model", "python:mymodels:build"),
        ("data.source", "digits"),
        ("data.source", "folder:/images"),
        ("data.source", "tfds:mnist"),
        ("registry.model_name", "edgecompress-digits"),
    ],
)
def test_a_value_with_a_trailing_newline_is_refused(key: str, value: str) -> None:
    """A pattern ending in `$` also matches before a final newline: "cnn\\n" passed and crashed later."""
    repo_params([f"{key}={value}"])  # the value itself is fine
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        repo_params([f'{key}="{value}\\n"'])  # YAML's double quotes: the value ends in a newline


@pytest.mark.parametrize(
    "overrides",
    [
        ["prune.final_sparsity=" + "9" * 100_000],  # pydantic's own message, with the input
        ["train.model=" + "x" * 100_000],  # our validator's, with the value
        ["prune." + "k" * 100_000 + "=1"],  # an unknown key
        ["x" * 100_000],  # not section.key=value at all
        ["train.model=file:" + "m" * 100_000, "train.weights=w.h5"],  # a cross-key rule naming train.model
    ],
)
def test_an_error_quotes_a_huge_value_cut_short(overrides: list[str]) -> None:
    with pytest.raises(ParamsError) as caught:
        repo_params(overrides)
    message = str(caught.value)
    assert len(message) < 400, message[:400]
    assert "…" in message
