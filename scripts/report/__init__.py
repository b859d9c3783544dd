"""Report on moe-train runs: tables beside the paper's numbers, and figures.

scripts/report.py is the entry point (python3 scripts/report.py RUN_DIR...);
docs/report.md describes every table, figure and value. The modules:

    runs.py      reading run directories (config.yaml with PyYAML, the JSONL logs)
    variants.py  grouping runs into variants by moe-train's key metadata
    paper.py     the paper's numbers (docs/paper_numbers.yaml) and which runs match them
    tables.py    numbers, cells and the report's tables
    figures.py   the PNG figures (matplotlib, Agg)
    render.py    the document model, written as HTML and Markdown
    __main__.py  the command line: arguments, the report's layout, exit codes
"""

PROG = "report.py"


class InputError(Exception):
    """Bad input: reported as one line, exit 2."""


def progress(msg):
    print(msg, flush=True)
