"""Which operators end up in an Edge TPU subgraph, following the data flow rather than the file's order.

The compiler delegates through TensorFlow Lite (its logs carry TFLite's "Restored original execution
plan after delegate application failure"), and TFLite partitions a graph in epochs
(tensorflow/lite/graph_info.cc, PartitionGraphIntoIndependentNodeSubsets): the first operator that is
ready, in execution order, sets the epoch's kind (delegated or not); every ready operator of that
kind joins it, until none is left; then the other kind gets an epoch, and so on. An operator is ready
when every tensor it reads is a model input, a constant, or the output of an operator already placed.

- One Edge TPU subgraph (the compiler's default): the first delegated epoch is the Edge TPU subgraph.
  What falls back is the operators that cannot map and everything that depends on them; operators
  that run on the CPU before that epoch starts (a float-to-int8 QUANTIZE of a float input) do not
  push what follows off the chip. That reproduces the real logs (kapibara_model, nrf20_mnist4_float_io,
  yolov8n_full_int_quant) where an order-based cut does not.
- Several subgraphs (`-a`): every delegated epoch is an Edge TPU subgraph, except that an operator
  that would join outputs of two different Edge TPU subgraphs runs on the CPU, and what reads it
  starts a new subgraph. That is what retinanet_padded_multisubgraph's log shows: once its FPN ADD
  fell back, the two CONCATENATIONs gathering boxes from both sides ran on the CPU ("More than one
  subgraph is not supported") and the CONCATENATION + QUANTIZE after them formed a third subgraph.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from tasks.stages.edgetpu.graph import Graph
from tasks.stages.edgetpu.rules import MAPPED, ONE_SUBGRAPH, Finding

# Why an operator is where it is; the JSON's "reason".
REASON_MAPPED = "mapped"
REASON_OWN = "own limitation"
REASON_UNDOCUMENTED = "not documented: may fall back"
REASON_DEPENDS = "depends on a fallback"
REASON_DEPENDS_UNDOCUMENTED = "depends on an operator that may fall back"
DEPENDENT_REASONS = frozenset({REASON_DEPENDS, REASON_DEPENDS_UNDOCUMENTED})


@dataclass(frozen=True)
class Placement:
    """Where one operator runs, and why."""

    edgetpu: bool
    status: str  # the compiler's wording
    reason: str  # one of the REASON_* above
    because_of: int | None = None  # the operator with its own limitation that this one depends on
    uncertain: bool = False  # the verdict rests on an undocumented limit
    subgraph: int | None = None  # which Edge TPU subgraph (0, 1, ...) when mapped


@dataclass(frozen=True)
class Partition:
    placements: list[Placement]
    subgraphs: int


def _epochs(g: Graph, cpu: list[bool], multiple_subgraphs: bool) -> tuple[list[int], list[bool]]:
    """Each operator's epoch, and each epoch's kind (True: delegated), TFLite's way.

    With several subgraphs allowed, an operator that would join two delegated epochs is turned into a
    CPU operator as it becomes ready (the retinanet evidence); `cpu` is updated in place.
    """
    n = len(g.operators)
    waiting = [len({t for t in op.inputs if t in g.producer}) for op in g.operators]
    epoch_of = [-1] * n
    kinds: list[bool] = []
    ready = [i for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)

    def joins_two_subgraphs(i: int) -> bool:
        delegated = {epoch_of[p] for p in g.producers_of(g.operators[i]) if kinds[epoch_of[p]]}
        return len(delegated) > 1

    while ready:
        delegated = not cpu[ready[0]]  # the first ready operator in execution order sets the kind
        epoch = len(kinds)
        kinds.append(delegated)
        same = [i for i in ready if cpu[i] != delegated]
        ready = [i for i in ready if cpu[i] == delegated]
        heapq.heapify(ready)
        while same:
            i = same.pop()
            epoch_of[i] = epoch
            for consumer in g.consumers_of(g.operators[i]):
                waiting[consumer] -= sum(1 for t in set(g.operators[consumer].inputs) if g.producer.get(t) == i)
                if waiting[consumer]:
                    continue
                if multiple_subgraphs and not cpu[consumer] and joins_two_subgraphs(consumer):
                    cpu[consumer] = True
                if cpu[consumer] != delegated:
                    same.append(consumer)
                else:  # the other kind waits for the next epoch
                    heapq.heappush(ready, consumer)
    if any(e < 0 for e in epoch_of):  # a tensor read before it is written: not a valid TFLite order
        kinds.append(False)
        epoch_of = [e if e >= 0 else len(kinds) - 1 for e in epoch_of]
        for i, e in enumerate(epoch_of):
            cpu[i] = cpu[i] or not kinds[e]
    return epoch_of, kinds


def partition(g: Graph, findings: dict[int, Finding], multiple_subgraphs: bool) -> Partition:
    """Each operator's placement given the operators that cannot map by themselves (`findings`)."""
    n = len(g.operators)
    cpu = [i in findings for i in range(n)]
    epoch_of, kinds = _epochs(g, cpu, multiple_subgraphs)
    delegated_epochs = [e for e, kind in enumerate(kinds) if kind]
    first = delegated_epochs[0] if delegated_epochs else len(kinds)
    if multiple_subgraphs:
        numbering = {e: k for k, e in enumerate(delegated_epochs)}
    else:
        numbering = {first: 0} if delegated_epochs else {}

    def mapped(i: int) -> bool:
        return not cpu[i] and epoch_of[i] in numbering

    # The operators with a limit of their own that each operator depends on (the earliest of each
    # kind), not counting those that run before the Edge TPU subgraph starts.
    certain: list[int | None] = [None] * n
    uncertain: list[int | None] = [None] * n
    for op in g.operators:
        i = op.index
        for p in g.producers_of(op):
            own = p in findings and epoch_of[p] > first
            p_certain = p if own and not findings[p].uncertain else certain[p]
            p_uncertain = p if own and findings[p].uncertain else uncertain[p]
            certain[i] = _earliest(certain[i], p_certain)
            uncertain[i] = _earliest(uncertain[i], p_uncertain)

    placements = []
    for i in range(n):
        if mapped(i):
            placements.append(Placement(True, MAPPED, REASON_MAPPED, subgraph=numbering[epoch_of[i]]))
        elif i in findings:
            finding = findings[i]
            reason = REASON_UNDOCUMENTED if finding.uncertain else REASON_OWN
            placements.append(Placement(False, finding.rule.status, reason, uncertain=finding.uncertain))
        elif certain[i] is not None:
            placements.append(Placement(False, ONE_SUBGRAPH, REASON_DEPENDS, because_of=certain[i]))
        elif uncertain[i] is not None:
            placements.append(
                Placement(False, ONE_SUBGRAPH, REASON_DEPENDS_UNDOCUMENTED, because_of=uncertain[i], uncertain=True)
            )
        else:  # cut off without a limited operator upstream: only an invalid operator order gets here
            placements.append(Placement(False, ONE_SUBGRAPH, REASON_DEPENDS))
    subgraphs = len({p.subgraph for p in placements if p.edgetpu})
    return Partition(placements, subgraphs)


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
