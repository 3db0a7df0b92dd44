"""Does memory stay flat as the dataset grows? prepare + train + evaluate at two sizes, side by side.

    python -m benchmarks.scale [--small 2000] [--large 20000] [--out data/reports/scale_benchmark.json]

It generates an image-folder dataset (96x96 RGB PNGs, ten classes of coloured shapes on noise, so
there is something to learn; nothing is downloaded) at each size, and runs, each size in a fresh
process of its own: prepare (a `folder:` source: every image checked and copied), train (MobileNetV2
alpha 0.35, one epoch, streamed through tf.data), and evaluate (the float model on the test split,
streamed). It reports peak resident memory per size, their ratio (target: the large at most 1.25x the
small) and seconds per 1,000 images of each stage. Ratios are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import write_report

ROOT = Path(__file__).resolve().parent.parent
SIZE = 96
CLASSES = 10
TEST_SHARE = 0.2
TARGET = 1.25
SETTINGS = [
    "data.image_size=96",
    "data.channels=3",
    "train.model=mobilenet_v2",
    "train.alpha=0.35",
    "train.epochs=1",
    "train.stop_near_chance=false",  # one epoch on the small set scores near chance; memory is what is measured
    "data.calibration_size=100",
]


def _progress(message: str) -> None:
    print(f"[scale benchmark] {message}", file=sys.stderr, flush=True)


def generate(folder: Path, count: int, seed: int = 0) -> None:
    """`count` images as <folder>/<split>/<class>/*.png: a class is a shape and a hue, placed at random."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % CLASSES
        split = "test" if (index // CLASSES) % int(1 / TEST_SHARE) == 0 else "train"
        noise = rng.integers(0, 96, (SIZE, SIZE, 3), dtype=np.uint8)
        image = Image.fromarray(noise, "RGB")
        draw = ImageDraw.Draw(image)
        hue = (label * 25 % 256, 255 - label * 20, 60 + label * 18)
        x, y = rng.integers(8, SIZE - 40, 2)
        box = (int(x), int(y), int(x) + 32, int(y) + 32)
        shape = label % 3
        if shape == 0:
            draw.ellipse(box, fill=hue)
        elif shape == 1:
            draw.rectangle(box, fill=hue)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=hue)
        target = folder / split / f"class_{label}"
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{index:06d}.png")


# One size, in a process of its own, so that its peak resident memory is its own.
MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path

    import tasks
    from tasks.stages import images as reader, prepare
    from tasks.stages.evaluate import keras_variant
    from tasks.layout import Layout
    from tasks.params import apply_overrides, parse_params, read_params_file
    from tasks.stages import STAGES

    root, source, settings = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    overrides = [*settings, f"data.source=folder:{source}"]
    params = parse_params(apply_overrides(read_params_file(Path(sys.argv[4])), overrides))
    layout = Layout(root)
    seconds = {}
    started = time.perf_counter()
    prepare.prepare(params.data, layout)
    seconds["prepare"] = time.perf_counter() - started
    started = time.perf_counter()
    STAGES["train"](layout, params)
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    test = reader.load_test(layout, params.data)
    accuracy = keras_variant(layout.float_model, test, params.evaluate)["accuracy"]
    seconds["evaluate"] = time.perf_counter() - started
    fit, _ = reader.load_fit_validation(layout, params.data)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    everything = len(reader.load_split(layout.raw, "train", params.data)) + len(test)
    images = {"prepare": everything, "train": len(fit), "evaluate": len(test)}
    print(json.dumps({"seconds": seconds, "images": images, "peak_rss_mib": peak_mib, "accuracy": accuracy}))
    """
)


def measure(folder: Path, count: int) -> dict[str, Any]:
    source = folder / f"images-{count}"
    _progress(f"generating {count} images ({SIZE}x{SIZE} RGB)")
    generate(source, count)
    _progress(f"prepare + train (1 epoch) + evaluate on {count} images, in a fresh process")
    project, params_file = folder / f"project-{count}", ROOT / "params.yaml"
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(project), str(source), json.dumps(SETTINGS), str(params_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the {count}-image run failed:\n{result.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    measured["seconds_per_1000_images"] = {
        stage: round(1000 * seconds / measured["images"][stage], 2) for stage, seconds in measured["seconds"].items()
    }
    return measured


def main(argv: list[str] | None = None) -> int:
    """Measure both sizes, print the table and the ratio, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "scale_benchmark.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        small, large = measure(Path(folder), args.small), measure(Path(folder), args.large)
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    result = {
        "settings": SETTINGS,
        "sizes": {str(args.small): small, str(args.large): large},
        "ratios": {
            "peak_rss_large_over_small": {"value": round(ratio, 3), "target": f"<= {TARGET}", "met": ratio <= TARGET}
        },
    }
    write_report(args.out, result)
    print(
        f"{'images':>8} {'peak RSS MiB':>13} {'prepare s/1k':>13} {'train s/1k':>11} {'evaluate s/1k':>14} {'acc':>6}"
    )
    for count, measured in ((args.small, small), (args.large, large)):
        per = measured["seconds_per_1000_images"]
        print(
            f"{count:>8} {measured['peak_rss_mib']:>13.0f} {per['prepare']:>13.2f} {per['train']:>11.2f} "
            f"{per['evaluate']:>14.2f} {measured['accuracy']:>6.3f}"
        )
    verdict = "pass" if ratio <= TARGET else "MISS"
    print(f"peak RSS, {args.large} over {args.small} images: {ratio:.3f}   target <= {TARGET}   {verdict}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
