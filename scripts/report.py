#!/usr/bin/env python3
"""Report on moe-train runs: tables beside the paper's numbers, and figures.

    scripts/report.py RUN_DIR... [--out DIR] [--smooth W] [--ignore-key SECTION.KEY]...
                      [--moe-train PATH | --key-meta FILE] [--title TITLE]

The entry point of the package scripts/report/ (the same as
`python3 -m report` run from scripts/); docs/report.md describes the report.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report.__main__ import run  # noqa: E402  (the package beside this file)

if __name__ == "__main__":
    run(sys.argv[1:])
