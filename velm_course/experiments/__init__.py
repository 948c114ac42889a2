"""Experiments: one grid runner for every comparison, and the tasks it trains.

``grid.run_grid`` runs a grid of cells over seeds, caches each result in JSON and resumes an
interrupted grid; ``grid.summarize`` and ``grid.paired_gap`` compare cells over seeds.
``captioning.caption_task`` trains and scores one captioner per cell (notebooks 09 and 13);
``vqa.vqa_task`` one VQA model, from scratch or pretrained (notebook 13).
"""

from .grid import GridError, failed, paired_gap, run_grid, summarize

__all__ = ["GridError", "failed", "paired_gap", "run_grid", "summarize"]
