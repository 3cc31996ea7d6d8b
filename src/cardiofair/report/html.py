"""One self-contained HTML page: inline CSS, images as base64 data URIs, no script, no network.

A report is mailed, archived and opened years later, often offline: everything it shows is
inside the one file. Functions here take plain text and escape it; only arguments named
``body`` or ``fragments`` are HTML already built by these functions.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Sequence

from cardiofair.formatting import Table

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2125; margin: 0;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2.4rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
nav ol { columns: 2; font-size: 0.95rem; }
table { border-collapse: collapse; margin: 0 0 0.4rem; font-size: 0.88rem; }
p.caption { font-weight: 600; margin: 1rem 0 0.3rem; max-width: 70rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 0.8rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
img.pixelated { image-rendering: pixelated; width: 520px; max-width: 100%; }
figcaption { font-size: 0.88rem; color: #444; margin-top: 0.3rem; max-width: 70rem; }
.missing { background: #fff4e5; border-left: 4px solid #e69500; padding: 0.5rem 0.8rem; }
.synthetic { background: #fdecea; border-left: 4px solid #c62828; padding: 0.5rem 0.8rem; font-weight: 600; }
.verdict { background: #fdecea; border-left: 4px solid #c62828; padding: 0.5rem 0.8rem; }
.note { font-size: 0.88rem; color: #444; margin: 0.2rem 0; }
.answer { font-weight: 600; font-size: 1.05rem; }
pre { background: #f3f4f6; padding: 0.6rem; overflow-x: auto; font-size: 0.82rem; white-space: pre-wrap; }
details { margin: 0.6rem 0; }
summary { cursor: pointer; font-weight: 600; }
"""


@dataclass
class Section:
    """One titled part of the page; ``body`` is HTML built with this module's functions."""

    id: str
    title: str
    body: str


def escape(value: object) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def paragraph(text: str, css_class: str | None = None) -> str:
    """A paragraph of plain text."""
    attribute = f' class="{escape(css_class)}"' if css_class else ""
    return f"<p{attribute}>{escape(text)}</p>"


def missing(text: str) -> str:
    """A plainly marked notice that an input or a figure is not there, and why."""
    return f'<p class="missing"><strong>Not available.</strong> {escape(text)}</p>'


def warning(text: str) -> str:
    """A plainly marked notice that something may not be what it seems."""
    return f'<p class="missing"><strong>Check.</strong> {escape(text)}</p>'


def verdict(title: str, text: str) -> str:
    """A statement the reader must see before any figure (at the top of the page)."""
    return f'<p class="verdict"><strong>{escape(title)}</strong> {escape(text)}</p>'


def heading(text: str) -> str:
    """A sub-heading inside a section."""
    return f"<h3>{escape(text)}</h3>"


def table(data: Table) -> str:
    """A captioned table with its notes below; an empty table says so instead."""
    notes = "".join(paragraph(n, "note") for n in data.notes)
    if not data.rows:
        return f'<p class="caption">{escape(data.caption)}</p>' + (notes or missing("No rows."))
    head = "".join(f"<th>{escape(h)}</th>" for h in data.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in data.rows)
    # The caption is a paragraph above the table, not <caption>: a table's caption is only as
    # wide as the table, which folds a long caption over a narrow table into many lines.
    return (f'<p class="caption">{escape(data.caption)}</p><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{notes}")


def image(png_data: bytes, alt: str, caption: str, pixelated: bool = False) -> str:
    """A PNG embedded as a data URI, with its caption; ``pixelated`` enlarges small raw images
    without smoothing (image pixels stay visible as pixels)."""
    source = "data:image/png;base64," + base64.b64encode(png_data).decode("ascii")
    css = ' class="pixelated"' if pixelated else ""
    return (f'<figure><img src="{source}" alt="{escape(alt)}"{css}>'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def preformatted(text: str) -> str:
    """Text shown as written (JSON, Markdown)."""
    return f"<pre>{escape(text)}</pre>"


def details(summary: str, body: str) -> str:
    """A block folded under a one-line summary (native HTML, no script)."""
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def link(href: str, text: str) -> str:
    """A relative link to a file written beside the page."""
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def page(title: str, fragments: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole document: title, introductory ``fragments``, a table of contents, the sections."""
    contents = "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>' for s in sections)
    parts = "".join(f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body><main><h1>{escape(title)}</h1>{''.join(fragments)}"
            f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>{parts}</main></body></html>\n")
