"""Where every artifact lives under data/ (one folder per layer, each a DVC out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Artifact paths of a project rooted at `root`."""

    root: Path

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw(self) -> Path:
        """The dataset as data/raw/<split>/<class>/<image>."""
        return self.root / "data" / "raw"

    @property
    def calibration(self) -> Path:
        """The representative set as data/calibration/<class>/<image>."""
        return self.root / "data" / "calibration"

    @property
    def float_model(self) -> Path:
        return self.root / "data" / "models" / "float.keras"

    @property
    def pruned_model(self) -> Path:
        return self.root / "data" / "models" / "pruned.keras"

    @property
    def clustered_model(self) -> Path:
        """The pruned model with its weights clustered (the pruned model itself when clustering is off)."""
        return self.root / "data" / "models" / "clustered.keras"

    @property
    def cluster_report(self) -> Path:
        return self.reports / "cluster.json"

    @property
    def float_tflite(self) -> Path:
        return self.root / "data" / "tflite" / "model_float.tflite"

    def quantized_tflite(self, ptq_mode: str) -> Path:
        """The shipped model: model_int8.tflite, model_dynamic_range.tflite or model_float16.tflite."""
        return self.root / "data" / "tflite" / f"model_{ptq_mode}.tflite"

    @property
    def int8_tflite(self) -> Path:
        return self.quantized_tflite("int8")

    @property
    def edgetpu_dir(self) -> Path:
        """model_int8_edgetpu.tflite and the compiler's log, when the compiler ran."""
        return self.root / "data" / "tflite" / "edgetpu"

    @property
    def reports(self) -> Path:
        return self.root / "data" / "reports"

    @property
    def train_report(self) -> Path:
        return self.reports / "train.json"

    @property
    def prune_report(self) -> Path:
        return self.reports / "prune.json"

    @property
    def quantize_report(self) -> Path:
        return self.reports / "quantize.json"

    @property
    def quant_debug_csv(self) -> Path:
        return self.reports / "quant_debug.csv"

    @property
    def quant_debug_plot(self) -> Path:
        return self.reports / "quant_debug.png"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def summary(self) -> Path:
        """The shipped model's headline figures, flat: the DVC metrics (`dvc metrics show`)."""
        return self.reports / "summary.json"

    @property
    def confusion(self) -> Path:
        """The shipped model's prediction for each test image (`dvc plots`' confusion matrix)."""
        return self.reports / "confusion.csv"

    @property
    def sparsity(self) -> Path:
        """Zeros per pruned kernel (a `dvc plots` bar chart)."""
        return self.reports / "sparsity.csv"

    @property
    def edgetpu_report(self) -> Path:
        return self.reports / "edgetpu.json"

    @property
    def gate_report(self) -> Path:
        """Not a DVC out: the verdict depends on the registry's champion, not only on files."""
        return self.reports / "gate.json"


def check_project(root: Path) -> None:
    """A project folder: params.yaml and a DVC repository; checked before anything is written."""
    from tasks.errors import EdgecompressError

    if not (root / "params.yaml").is_file():
        raise EdgecompressError(f"{root / 'params.yaml'}: not found (run from the project folder or pass --project)")
    if not (root / ".dvc").is_dir():
        raise EdgecompressError(
            f"{root}: not a DVC repository; run from the project folder (or `git init && dvc init` a copy)"
        )
