"""The report as a list of blocks (headings, paragraphs, tables, figures,
folded sections), written as one self-contained HTML page and as Markdown."""

import html
import re


class Doc:
    def __init__(self):
        self.blocks = []

    def h(self, level, text, anchor=None):
        self.blocks.append(("h", level, text, anchor))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        self.blocks.append(("ul", items))

    def table(self, title, caption, header, rows, anchor=None):
        self.blocks.append(("table", title, caption, header, rows, anchor))

    def toc(self, entries):
        """[(anchor, text)]: links in the HTML page (Markdown viewers make their own)."""
        self.blocks.append(("toc", entries))

    def fig(self, file, title, caption):
        if file:  # None: the figure had nothing to draw
            self.blocks.append(("fig", file, title, caption))

    def details(self, summary):
        """A folded section: the blocks added to the returned Doc, shown on a click."""
        inner = Doc()
        self.blocks.append(("details", summary, inner))
        return inner


def md_cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_blocks(blocks):
    out = []
    for b in blocks:
        if b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "ul":
            out += ["- " + x for x in b[1]] + [""]
        elif b[0] == "table":
            _, title, caption, header, rows, _a = b
            if title:
                out += [f"**{title}**", ""]
            if caption:
                out += [caption, ""]
            out.append("| " + " | ".join(md_cell(c) for c in header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            for r in rows:
                out.append("| " + " | ".join(md_cell(c) for c in r) + " |")
            out.append("")
        elif b[0] == "fig":
            _, file, title, caption = b
            out += [f"**{title}**", "", f"[![{title}]({file})]({file})", "", caption, ""]
        elif b[0] == "details":
            # GitHub-style Markdown folds <details>; the blank lines keep the
            # Markdown inside it rendered.
            out += [f"<details><summary>{html.escape(b[1])}</summary>", ""]
            out += _md_blocks(b[2].blocks)
            out += ["</details>", ""]
    return out


def render_md(doc):
    return "\n".join(_md_blocks(doc.blocks)).rstrip() + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #1d2125; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; margin: 0.4em 0 1.6em 0; font-size: 0.86em;
        display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #c8ccd4; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #eef1f6; } tr:nth-child(even) td { background: #f8f9fb; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.tt { font-weight: 600; margin-top: 1.2em; } .cap { color: #4a5360; font-size: 0.92em; margin: 0.2em 0; }
figure { margin: 1.2em 0 2.2em 0; } figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { color: #4a5360; font-size: 0.92em; } code { background: #f1f3f6; padding: 0 0.2em; }
details { margin: 0.6em 0 1em 0; border: 1px solid #dde; border-radius: 4px; padding: 0.3em 0.8em; }
summary { cursor: pointer; color: #2d3a4a; font-weight: 600; }
"""


def _inline(s):
    # `code` spans, as in the Markdown.
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(s)))


def _html_blocks(blocks):
    e = html.escape
    out = []
    for b in blocks:
        if b[0] == "h":
            anchor = f" id=\"{e(b[3])}\"" if b[3] else ""
            out.append(f"<h{b[1]}{anchor}>{_inline(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            _, ttl, caption, header, rows, anchor = b
            a = f" id=\"{e(anchor)}\"" if anchor else ""
            if ttl:
                out.append(f"<div class=\"tt\"{a}>{_inline(ttl)}</div>")
            if caption:
                out.append(f"<p class=\"cap\">{_inline(caption)}</p>")
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr>")
            for r in rows:
                cells = []
                for c in r:
                    cls = " class=\"num\"" if re.match(r"^[-+]?[\d.]", str(c)) else ""
                    cells.append(f"<td{cls}>{_inline(c)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</table>")
        elif b[0] == "toc":
            out.append("<p class=\"cap\">Contents: " + " · ".join(
                f"<a href=\"#{e(a)}\">{e(t)}</a>" for a, t in b[1]) + "</p>")
        elif b[0] == "fig":
            _, file, ttl, caption = b
            out.append(f"<figure><a href=\"{e(file)}\"><img src=\"{e(file)}\" alt=\"{e(ttl)}\"></a>"
                       f"<figcaption><b>{_inline(ttl)}.</b> {_inline(caption)}</figcaption></figure>")
        elif b[0] == "details":
            out.append(f"<details><summary>{_inline(b[1])}</summary>")
            out += _html_blocks(b[2].blocks)
            out.append("</details>")
    return out


def render_html(doc, title):
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    out += _html_blocks(doc.blocks)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
