"""Reading a report page in tests: every element closes in order, and its sections, images,
links and table rows are collected, so a test can check that each section is there and says
something, and that a figure stands in its row beside its reference."""

from html.parser import HTMLParser

SECTIONS = ("inputs", "cohort", "plan", "examples", "counterfactuals", "realism", "mask-fidelity", "prompt-fidelity",
            "privacy", "quality-cells", "closest-pairs", "masks", "fairness", "metadata", "cards")


class PageParser(HTMLParser):
    """Checks that every element closes in order, and collects sections, images, links and each
    section's table rows (the text of each cell)."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.sections, self.images, self.hrefs, self.tags = [], {}, [], [], set()
        self.rows: dict[str, list[list[str]]] = {}
        self.current = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = ""
            self.rows[self.current] = []
        if tag == "tr" and self.current is not None:
            self.rows[self.current].append([])
        if tag in ("td", "th") and self.current is not None:
            self.rows[self.current][-1].append("")
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.hrefs.append(attrs["href"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack, f"</{tag}> closes nothing"
        opened = self.stack.pop()
        assert opened == tag, f"<{opened}> closed by </{tag}>"
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.sections[self.current] += data
            if "td" in self.stack or "th" in self.stack:
                self.rows[self.current][-1][-1] += data


def parse(path):
    """The page at ``path``, parsed; fails on an element closed out of order or left open."""
    parser = PageParser()
    parser.feed(path.read_text())
    parser.close()
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return parser
