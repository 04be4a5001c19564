"""Blind reader studies on the output of `ldsr evaluate` (the reference thesis's Table 5.2).

- `ldsr.study.design`: `create_study` (study folder: study.json + images under opaque ids), `load_study`.
- `ldsr.study.store`: the SQLite ratings store (WAL; each rating committed before the answer).
- `ldsr.study.app`: the Flask rating application; `ldsr.study.serve`: waitress, localhost by default.
- `ldsr.study.stats`: Krippendorff's alpha, crossed bootstrap intervals, rater consistency.
- `ldsr.study.results`: Table 5.2 as Markdown, CSV and a figure.

This package imports neither torch nor Flask at import time; `app` and `serve` need the `study` extra.
"""

from __future__ import annotations

from ldsr.study.design import FORMAT, SCALE_LABELS, Study, StudyError, create_study, load_study

__all__ = ["FORMAT", "SCALE_LABELS", "Study", "StudyError", "create_study", "load_study"]
