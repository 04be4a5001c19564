"""`python -m ldsr ...`: the `ldsr` command without the console script (e.g. from a source tree on PYTHONPATH)."""

from ldsr.cli import app

app(prog_name="ldsr")
