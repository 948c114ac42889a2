"""The main job (`make run`) as a recorded benchmark: its wall time and its rows, in a file.

    python benchmarks/main_job.py [--profile ci] [--device cpu] [--keep RUN_DIR]

Runs ``velm_course.pipeline.train_and_evaluate`` (what ``velm-course train`` runs) from scratch
in a fresh run folder, on the shapes data of the profile (generated first if need be; that time
is counted apart), and records in benchmarks/results/main_job.json:

- ``job``: wall time (data generation apart), training seconds of the captioner and its blind
  twin, held-out cross-entropy of both and what the image is worth;
- ``rows``: every row of the job's honest evaluation (model, blind, fixed caption, nearest
  neighbour, human, oracle) on the test and compositional splits.

The README's results section is built from this file (tools/write_results.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _record import report  # benchmarks/_record.py

from velm_course.engine.trainer import resolve_device
from velm_course.profiles import get_profile, with_overrides

ROW_COLUMNS = ["split", "row", "Bleu_4", "METEOR", "CIDEr", "scene_f1", "exact_scene", "hallucination_rate"]


def main() -> None:
    from velm_course.data.registry import open_caption_data
    from velm_course.pipeline import train_and_evaluate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", default=None, help="run folder to keep (default: a temporary one)")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    cfg = with_overrides(profile.run, device=args.device)
    device = resolve_device(args.device)

    t0 = time.perf_counter()
    open_caption_data(cfg.data, seed=cfg.train.seed, progress=False)  # generate the data outside the timer
    data_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.keep or tmp) / "main_job"
        t0 = time.perf_counter()
        train_and_evaluate(cfg, run_dir=run_dir, progress=False)
        wall = time.perf_counter() - t0
        import json

        metrics = json.loads((run_dir / "metrics.json").read_text())

    nll, seconds = metrics["nll"], metrics["train_seconds"]
    beams = {name: d["beam_width"] for name, d in metrics["selection"]["decoding"].items()}
    report("main_job", "job", ["profile", "steps", "wall time", "data generation", "training captioner / blind",
                               "val nats per token captioner / blind", "image worth (nats per token)",
                               "beam width captioner / blind"],
           [{"profile": profile.name, "steps": cfg.train.steps, "wall time": f"{wall:.0f} s",
             "data generation": f"{data_seconds:.0f} s",
             "training captioner / blind": f"{seconds['model']:.0f} s / {seconds['blind']:.0f} s",
             "val nats per token captioner / blind": f"{nll['model']:.3f} / {nll['blind']:.3f}",
             "image worth (nats per token)": f"{nll['image_worth']:.3f}",
             "beam width captioner / blind": f"{beams['model']} / {beams['blind']}"}], device)
    rows = []
    for split in ("test", "compositional"):
        for row, scores in metrics.get(split, {}).items():
            rows.append({"split": split, "row": row,
                         **{m: f"{scores[m]:.3f}" if m in scores else "–" for m in ROW_COLUMNS[2:]}})
    print()
    report("main_job", "rows", ROW_COLUMNS, rows, device)


if __name__ == "__main__":
    main()
