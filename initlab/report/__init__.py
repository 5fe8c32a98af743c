"""initlab.report: compare initialization schemes across seeds from a study directory.

    from initlab.report import build_report
    results = build_report("/tmp/study")      # writes report.md, results.json and PNG plots

The study layout it reads is documented in `initlab.report.study`.
"""
from initlab.report.build import build_report
from initlab.report.study import SeedRun, Study, load_study

__all__ = ["build_report", "load_study", "SeedRun", "Study"]
