"""initlab.report: compare initialization schemes across seeds, for a study or a single run.

    from initlab.report import build_report
    results = build_report("runs/study")      # writes report.md, results.json and PNG plots

The layout it reads is `initlab.rundir`'s; the reader is `initlab.report.runs`.
"""

from initlab.report.build import build_report
from initlab.report.runs import SeedRun, Study, load_study

__all__ = ['build_report', 'load_study', 'SeedRun', 'Study']
