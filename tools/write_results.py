"""Write benchmarks/RESULTS.md and the README's "Results" section from the measured files.

    python tools/write_results.py           # rewrite both
    python tools/write_results.py --check   # exit 1 when either differs from what would be written

Nothing in either is typed by hand. The sources, all committed:

    benchmarks/results/<name>.json   what each benchmark script measured (benchmarks/_record.py),
                                     main_job.json and notebook_times.json included
    benchmarks/lm_curves.csv         the language scoreboard's recorded run
    benchmarks/bpe_lm.csv            a GPT and an n-gram on BPE tokens, in bits per byte
    data/experiments/<grid>.json     the experiment grids of notebooks 09 and 13

The README's section sits between the two marker lines below and is replaced whole;
tests/test_results.py fails when it differs from what this script writes from the files.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN = "<!-- results:begin (written by tools/write_results.py from measured files; do not edit) -->"
END = "<!-- results:end -->"

# (results file, script, {table id: caption}) in the order RESULTS.md shows them
BENCHMARKS = [
    ("main_job", "benchmarks/main_job.py", {"job": "The job", "rows": "Every row, test and compositional splits"}),
    ("ngram", "benchmarks/bench_ngram.py", {"kneser_ney": None}),
    ("metrics", "benchmarks/bench_metrics.py", {"end_to_end": "End to end", "stages": "Per stage, one run each"}),
    ("engine", "benchmarks/bench_engine.py", {"engine_vs_plain": "Engine against a plain loop",
                                              "in_memory": "The in-memory data path",
                                              "precision": "Precision and data waiting (GPU)"}),
    ("coco_gpu", "benchmarks/bench_coco_gpu.py", {"precision": "Precision, COCO sizes, batches on the device",
                                                  "data_path": "Synthetic COCO JPEGs through the DataLoader",
                                                  "feature_cache": "The feature cache",
                                                  "recipe": "The COCO recipe: GPT-2 small on cached CLIP features",
                                                  "targets": "Targets (observations)"}),
    ("captioner", "benchmarks/bench_captioner.py", {"speed": None}),
    ("transformer", "benchmarks/bench_transformer.py", {"gpt_training": None}),
    ("decoding", "benchmarks/bench_decoding.py", {"kv_cache": None}),
    ("conv", "benchmarks/bench_conv.py", {"three_ways": None}),
]
COCO_TARGET = ("CIDEr-D ≥ 1.13 on the Karpathy test split within one hour of one A100/H100-class GPU, from cached "
               "features (ClipCap's 113.1 on the papers' scale)")
COCO_COMMAND = ("velm-course fetch coco && velm-course train --profile full --dataset coco --run-dir runs/coco && "
                "velm-course evaluate runs/coco --beam-width 3")


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def markdown(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def docstring(script: str) -> tuple[str, str]:
    """(first line, the rest) of a script's module docstring."""
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / script).read_text())) or script
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip("\n")


def lm_rows() -> list[dict]:
    """The language scoreboard: each model's last row in lm_curves.csv."""
    path = ROOT / "benchmarks" / "lm_curves.csv"
    last: dict[str, dict] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            key = (row["model"], row["device"])
            if key not in last or int(row["step"]) >= int(last[key]["step"]):
                last[key] = row
    out = []
    for row in sorted(last.values(), key=lambda r: float(r["val_bpc"])):
        neural = not row["model"].startswith(("char-kn", "word-kn"))
        out.append({"model": row["model"], "device": row["device"],
                    "parameters": f"{int(row['parameters']):,}" if row["parameters"] else "counts",
                    "training": f"{int(row['step']):,} steps, {float(row['train_seconds']) / 60:.0f} min" if neural
                    else f"{float(row['train_seconds']):.1f} s to count",
                    "FLOPs (6ND)": f"{float(row['train_flops']):.2e}" if row["train_flops"] else "–",
                    "bits per character": f"{float(row['val_bpc']):.4f}"})
    return out


def describe(name: str, table: str, row: dict) -> str:
    """One line saying what a benchmark row compares, for the README's table."""
    if name == "ngram":
        return f"trigram Kneser–Ney fit + score vs nltk.lm (perplexities {row['perplexity ours / nltk (same tokens)']})"
    if name == "metrics":
        what = "BLEU, ROUGE-L, CIDEr-D end to end" if table == "end_to_end" else row["stage"]
        return f"{what} vs pycocoevalcap"
    if name == "engine":
        return ("the training engine vs a plain loop" if table == "engine_vs_plain"
                else f"engine images/s in {row['precision']} vs fp32")
    if name == "transformer":
        return (f"GPT training vs HF GPT-2, {row['config (layers/heads/width/T/V)']} (layers/heads/width/T/V), "
                f"batch {row['batch']}, {row['precision']}")
    if name == "decoding":
        return f"greedy decoding with vs without KV cache, {row['decoder']}, {row['captions at once']} at once"
    return row.get("comparison", table)


def results_md() -> str:
    parts = ["# Benchmark results", "",
             "Written by `tools/write_results.py` from the files in `benchmarks/results/` (one per benchmark, "
             "written by the benchmark itself) and `benchmarks/lm_curves.csv`; do not edit by hand. `make bench` "
             "reruns every benchmark that runs on this machine and rewrites this file; rows measured on a GPU are "
             "kept, with their date and device, until a GPU session measures them again. Speed and memory are "
             "ratios against a reference run side by side, in the same process. Earlier results, with the "
             "analysis written at the time, are in [HISTORY.md](HISTORY.md).", ""]
    for name, script, tables in BENCHMARKS:
        data = load(name)
        first, rest = docstring(script)
        parts += [f"## {first.rstrip('.')}: `{script}`", "", rest, ""]
        for table, caption in tables.items():
            entry = (data or {}).get("tables", {}).get(table)
            if caption:
                parts += [f"**{caption}.**", ""]
            if not entry or not entry["rows"]:
                parts += ["Not measured yet.", ""]
                continue
            parts += [markdown(["date", "machine", *entry["columns"]], entry["rows"]), ""]
    first, rest = docstring("benchmarks/lm_curves.py")
    parts += [f"## {first.rstrip('.')}: `benchmarks/lm_curves.py`", "", rest, "",
              markdown(["model", "device", "parameters", "training", "FLOPs (6ND)", "bits per character"], lm_rows()),
              ""]
    first, rest = docstring("benchmarks/bpe_lm.py")
    with (ROOT / "benchmarks" / "bpe_lm.csv").open() as f:
        bpe_rows = list(csv.DictReader(f))
    parts += [f"## {first.rstrip('.')}: `benchmarks/bpe_lm.py`", "", rest, "",
              markdown(["model", "vocabulary", "parameters", "steps", "tokens", "train_flops", "train_seconds", "device",
                        "val_bits_per_byte"], bpe_rows), ""]
    return "\n".join(parts).rstrip() + "\n"


def _pm(summary: dict, digits: int = 2) -> str:
    return f"{summary['mean']:.{digits}f} ± {summary['half_range']:.{digits}f}"


def grid_rows(name: str, columns: dict[str, tuple[str, int]]) -> tuple[str, list[dict]]:
    """A recorded grid's command and its summary rows (mean ± half the range over seeds)."""
    sys.path.insert(0, str(ROOT))
    from velm_course.experiments.grid import summarize

    recorded = json.loads((ROOT / "data" / "experiments" / f"{name}.json").read_text())
    summary = summarize(recorded["runs"], [m for m, _ in columns.values()])
    rows = [{"cell": cell, **{label: _pm(s[m], d) if m in s else "–" for label, (m, d) in columns.items()}}
            for cell, s in summary.items()]
    seeds = len({r["seed"] for r in recorded["runs"]})
    return f"{seeds} seeds, `{recorded['command']}`", rows


def readme_section() -> str:
    out = [BEGIN, "## Results", "",
           "Every number below is read from a committed file that a script measured; `make bench` measures them "
           "again and `python tools/write_results.py` rewrites this section (a test fails when it is out of date). "
           "Details and every benchmark: [benchmarks/RESULTS.md](benchmarks/RESULTS.md).", ""]

    job = load("main_job")
    out += ["### The main job (`make run`)", ""]
    if job:
        j = job["tables"]["job"]["rows"][-1]
        out += [f"{j['date']}, {j['machine']}, `{j['profile']}` profile: {j['wall time']} wall time (data generation "
                f"{j['data generation']} apart), training {j['training captioner / blind']} (captioner / blind twin). "
                f"Validation cross-entropy {j['val nats per token captioner / blind']} nats per token: the image is "
                f"worth {j['image worth (nats per token)']}. Each row is scored against the same references; every "
                "choice was made on validation.", ""]
        cols = ["split", "row", "CIDEr", "scene_f1", "exact_scene", "hallucination_rate"]
        out += [markdown(cols, [r for r in job["tables"]["rows"]["rows"] if r["row"] != "oracle"]), ""]
    else:
        out += ["Not measured yet: `python benchmarks/main_job.py`.", ""]

    out += ["### Checked against reference implementations, and how fast", ""]
    rows = []
    for name, script, _ in BENCHMARKS[1:]:
        data = load(name) or {"tables": {}}
        for table, entry in data["tables"].items():
            ratio = next((c for c in entry["columns"] if c.startswith(("speed-up", "plain / engine", "vs fp32"))), None)
            if ratio is None:
                continue
            for r in entry["rows"]:
                rows.append({"benchmark": f"`{Path(script).name}`", "what": describe(name, table, r), "ratio": r[ratio],
                             "measured": f"{r['date']}, {r['machine']}"})
    out += ["Each ratio is the reference's time over ours (above 1: ours is faster), measured side by side in one "
            "process; where two implementations of one computation are compared, their outputs are checked equal "
            "first (scores to 1e-9, perplexities, logits, captions).", "",
            markdown(["benchmark", "what", "ratio", "measured"], rows), ""]

    out += ["### The language scoreboard", "",
            "Bits per character of the whole validation text (two plays), every character paid for "
            "(`benchmarks/lm_curves.csv`; the neural models at equal training compute):", "",
            markdown(["model", "device", "parameters", "training", "bits per character"], lm_rows()), ""]

    bpe = ROOT / "benchmarks" / "bpe_lm.csv"
    if bpe.exists():
        with bpe.open() as f:
            rows = list(csv.DictReader(f))
        names = {"gpt-4x128": "GPT 4×128, 1e13 FLOPs", "kn-4": "4-gram Kneser–Ney"}
        table = {}
        for r in rows:
            table.setdefault(r["vocabulary"], {"BPE vocabulary": r["vocabulary"]})[names[r["model"]]] = r["val_bits_per_byte"]
        out += ["Bits per byte on BPE tokens of the whole training plays (`benchmarks/bpe_lm.csv`, notebook 02):", "",
                markdown(["BPE vocabulary", *names.values()], list(table.values())), ""]

    out += ["### Experiments (notebooks 09 and 13)", ""]
    how, rows = grid_rows("fusion_grid", {"val CIDEr-D": ("val.CIDEr", 2), "val scene F1": ("val.scene_f1", 2),
                                          "compositional scene F1": ("compositional.scene_f1", 2)})
    out += [f"Fusion, captioning on the shapes data, validation ({how}):", "", markdown(list(rows[0]), rows), ""]
    how, rows = grid_rows("encoder_grid", {"val CIDEr-D": ("val.CIDEr", 2), "val loss": ("val_loss", 3)})
    out += [f"Image encoders trained from scratch with the captioner ({how}):", "", markdown(list(rows[0]), rows), ""]
    how, rows = grid_rows("vqa_grid", {"val accuracy": ("val.accuracy", 3),
                                       "compositional accuracy": ("compositional.accuracy", 3),
                                       "R@1 text→image": ("retrieval.t2i_R@1", 3)})
    out += [f"VQA from scratch or pretrain → fine-tune on 10 % of the questions ({how}):", "",
            markdown(list(rows[0]), rows), ""]

    times = load("notebook_times")
    out += ["### Notebooks under strict nbval (`ci` profile)", ""]
    if times:
        t = times["tables"]["nbval"]["rows"]
        out += [f"{t[0]['date']}, {t[0]['machine']}, measured by `tools/notebook_times.py`:", "",
                markdown(["notebook", "seconds", "cells"], t), ""]
    else:
        out += ["Not measured yet: `python tools/notebook_times.py`.", ""]

    coco = load("coco")
    out += ["### COCO Captions on a GPU", "", f"Target: {COCO_TARGET}.", ""]
    if coco:
        c = coco["tables"]["karpathy_test"]["rows"][-1]
        out += [f"Measured {c['date']} on {c['machine']}: CIDEr-D {c['CIDEr']} after {c['hours']} h.", ""]
    else:
        out += ["Status: **not measured** (no COCO and no GPU where the course is built). Measure it with "
                f"`{COCO_COMMAND}`.", ""]
    out.append(END)
    return "\n".join(out)


def readme_with_section(readme: str) -> str:
    section = readme_section()
    if BEGIN in readme and END in readme:
        head, _, rest = readme.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + section + tail
    anchor = "\n## For contributors"  # first time: the section goes before the contributors' notes
    head, sep, tail = readme.partition(anchor)
    return head.rstrip("\n") + "\n\n" + section + "\n" + sep + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    targets = {ROOT / "benchmarks" / "RESULTS.md": results_md(),
               ROOT / "README.md": readme_with_section((ROOT / "README.md").read_text())}
    stale = [p for p, text in targets.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date: run python tools/write_results.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(targets[p])
        print("wrote", p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
