"""The rules table: every rule names its evidence and fix, and the architecture page lists it."""

from __future__ import annotations

from tasks.stages.edgetpu import RULES
from tests.conftest import REPO

ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


def test_every_rule_names_its_evidence_and_fix() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert rule.evidence and all(e.source and e.quote for e in rule.evidence), rule.id
        assert rule.requirement and rule.fix and rule.condition and rule.status, rule.id
        # A source is a public URL or a shared case's name, never a file on someone's machine.
        assert not any(e.source.startswith(("/", "~")) for e in rule.evidence), rule.id


def test_the_architecture_page_lists_every_rule() -> None:
    page = ARCHITECTURE.read_text()
    missing = [rule.id for rule in RULES if f"`{rule.id}`" not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not list rules {missing}"
