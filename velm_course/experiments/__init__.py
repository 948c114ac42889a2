"""Experiments: one grid runner for every comparison, and the tasks it trains.

``grid.run_grid`` runs a grid of cells over seeds, caches each result in JSON and resumes an
interrupted grid; ``captioning.caption_task`` trains and scores one captioner per cell.
"""

from .grid import GridError, failed, run_grid, summarize

__all__ = ["GridError", "failed", "run_grid", "summarize"]
