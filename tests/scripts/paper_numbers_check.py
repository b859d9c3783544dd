#!/usr/bin/env python3
"""docs/paper.md's table of the paper's results is docs/paper_numbers.yaml's
rows, as scripts/report/paper.py writes them (run by tests/scripts/report_test.sh).

    paper_numbers_check.py            check; exit 1 naming the difference
    paper_numbers_check.py --write    rewrite the table in docs/paper.md
"""

import os
import sys

repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(repo, "scripts"))
from report.paper import markdown_table  # noqa: E402

BEGIN, END = "<!-- begin: generated from paper_numbers.yaml -->", "<!-- end: generated from paper_numbers.yaml -->"
doc_path = os.path.join(repo, "docs", "paper.md")
text = open(doc_path, encoding="utf-8").read()
if text.count(BEGIN) != 1 or text.count(END) != 1:
    sys.exit(f"FAIL: {doc_path}: expected one '{BEGIN}' ... '{END}' block")
head, rest = text.split(BEGIN)
body, tail = rest.split(END)
want = "\n" + markdown_table()
if "--write" in sys.argv[1:]:
    with open(doc_path, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + want + END + tail)
    print(f"wrote the paper's numbers into {doc_path}")
elif body != want:
    got, exp = body.strip().splitlines(), want.strip().splitlines()
    diff = next((f"line {i + 1}: '{a}', expected '{b}'" for i, (a, b) in enumerate(zip(got, exp)) if a != b),
                f"{len(got)} lines, expected {len(exp)}")
    sys.exit(f"FAIL: {doc_path}: its table of the paper's numbers differs from docs/paper_numbers.yaml "
             f"({diff}); run tests/paper_numbers_check.py --write")
else:
    print(f"paper_numbers_check: {doc_path} holds the {len(want.splitlines()) - 3} rows of docs/paper_numbers.yaml")
