"""What the command line prints: tables that are never cut, piped or in a narrow terminal."""

from __future__ import annotations

import pytest

from flows.cli.tables import print_history

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def history() -> list[dict[str, object]]:
    return [
        {
            "version": version,
            "aliases": ["candidate", "previous-champion"],
            "gate": "passed",
            "int8_accuracy": 0.98333,
            "float_accuracy": 0.98611,
            "int8_size_bytes": 123456.0,
            "sparsity": 0.9,
            "git_commit": COMMIT,
        }
        for version in (2, 1)
    ]


def test_a_piped_table_keeps_every_cell_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    print_history("edgecompress-digits", history())  # stdout is not a terminal here, as in `| less`
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if COMMIT in line]
    assert len(rows) == 2, out  # each row on one line, the commit whole
    assert all("candidate, previous-champion" in row for row in rows), out
    assert "…" not in out


def test_a_narrow_terminal_wraps_cells_instead_of_cutting_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    print_history("edgecompress-digits", history())
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 60, out
    assert "…" not in out
    # The commit, folded over lines of its column, is all there.
    cells = "".join(line.split("│")[-2].strip() for line in out.splitlines() if line.count("│") >= 9)
    assert cells.count(COMMIT) == 2, out
