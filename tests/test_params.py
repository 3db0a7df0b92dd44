"""params.yaml: loaded once, typed, and every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ParamsError
from tasks.params import load_params, parse_override, write_overrides
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
    with pytest.raises(ParamsError, match=r"unknown key 'prune.sparsity' \(allowed: enabled, initial_sparsity"):
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
