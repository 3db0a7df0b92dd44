"""reproduce: what a rebuild needs, and how a difference is named (the rebuild itself: tests/flows/test_compress.py)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tasks.registry import Build
from tasks.registry.reproduce import ReproduceError, check_commit, differences, recorded_params, shipped_path


def stage(deps: dict[str, str], outs: dict[str, str], params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "cmd": "edgecompress stage x",
        "deps": [{"path": path, "md5": md5} for path, md5 in deps.items()],
        "params": {"params.yaml": params or {}},
        "outs": [{"path": path, "md5": md5} for path, md5 in outs.items()],
    }


LOCK: dict[str, Any] = {
    "schema": "2.0",
    "stages": {
        "prepare": stage(
            {"tasks/stages/prepare.py": "d1"}, {"data/raw": "r1.dir", "data/calibration": "c1.dir"}, {"data": {}}
        ),
        "train": stage(
            {"tasks/stages/train.py": "t1", "data/raw": "r1.dir"},
            {"data/models/float.keras": "f1"},
            {"train": {"epochs": 6, "seed": 42}},
        ),
        "quantize": stage(
            {"tasks/stages/quantize.py": "q1", "data/models/float.keras": "f1"},
            {"data/tflite/model_int8.tflite": "i1"},
            {"quantize.io_dtype": "int8"},
        ),
        "edgetpu": stage({"tasks/stages/edgetpu": "e1", "data/tflite/model_int8.tflite": "i1"}, {}),
    },
}


def build(dirty: bool = False) -> Build:
    return Build("m", "3", "run", copy.deepcopy(LOCK), "a" * 40, dirty, "i1")


def rebuilt(change: Any) -> dict[str, Any]:
    lock = copy.deepcopy(LOCK)
    change(lock["stages"])
    return lock


def test_the_shipped_model_is_what_the_edgetpu_stage_reads() -> None:
    assert shipped_path(LOCK) == "data/tflite/model_int8.tflite"


def test_a_stage_with_equal_inputs_and_other_outputs_is_named_as_the_root() -> None:
    def retrained(stages: dict[str, Any]) -> None:
        stages["train"]["outs"][0]["md5"] = "f2"
        stages["quantize"]["deps"][1]["md5"] = "f2"  # inherited: not named again
        stages["quantize"]["outs"][0]["md5"] = "i2"

    assert differences(build(), rebuilt(retrained)) == [
        "same inputs, different bytes: stage train wrote data/models/float.keras"
    ]


def test_changed_code_is_named_with_the_dirty_flag() -> None:
    def edited(stages: dict[str, Any]) -> None:
        stages["quantize"]["deps"][0]["md5"] = "q2"
        stages["quantize"]["outs"][0]["md5"] = "i2"

    found = differences(build(dirty=True), rebuilt(edited))
    assert found == ["code of quantize: tasks/stages/quantize.py (the version's run had uncommitted changes)"]


def test_changed_params_are_named_with_both_values() -> None:
    def retuned(stages: dict[str, Any]) -> None:
        stages["train"]["params"]["params.yaml"]["train"]["epochs"] = 7

    assert differences(build(), rebuilt(retuned)) == ["params of train: train.epochs 6 -> 7"]


def test_recorded_params_are_laid_over_the_commits_file() -> None:
    base = {"train": {"epochs": 30, "seed": 1, "batch_size": 32}, "quantize": {"io_dtype": "uint8"}, "gate": {}}
    merged = recorded_params(LOCK, base)
    assert merged["train"] == {"epochs": 6, "seed": 42, "batch_size": 32}
    assert merged["quantize"] == {"io_dtype": "int8"}
    assert merged["gate"] == {}


def test_a_commit_not_in_the_repository_is_one_line(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    with pytest.raises(ReproduceError, match=r"^commit bbbbbbbbbbbb \(the version's code\) is not in this repository"):
        check_commit(tmp_path, "b" * 40)
