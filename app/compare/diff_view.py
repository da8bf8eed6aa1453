"""Both transcripts side by side; after the runs, word differences are highlighted."""
from __future__ import annotations

import html

from PySide6.QtWidgets import QGridLayout, QLabel, QTextBrowser, QWidget

from app.compare.charts import COLORS, NAMES

REMOVED = "rgba(230, 90, 60, 0.35)"  # stock words that MLA changed or dropped
ADDED = "rgba(40, 150, 220, 0.35)"  # MLA words that differ from stock


def diff_html(word_diff: list[dict]) -> tuple[str, str, int]:
    """(stock html, mla html, number of differing stretches) from ComparisonReport.word_diff."""
    left, right, changed = [], [], 0
    for op in word_diff:
        a, b = " ".join(op.get("stock", [])), " ".join(op.get("mla", []))
        if op.get("op") == "equal":
            left.append(html.escape(a))
            right.append(html.escape(b))
            continue
        changed += 1
        if a:
            left.append(f'<span style="background:{REMOVED}">{html.escape(a)}</span>')
        if b:
            right.append(f'<span style="background:{ADDED}">{html.escape(b)}</span>')
    return " ".join(left), " ".join(right), changed


class DiffView(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.titles: dict[str, QLabel] = {}
        self.views: dict[str, QTextBrowser] = {}
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for col, label in enumerate(("stock", "mla")):
            title = QLabel(f'<b style="color:{COLORS[label].name()}">{NAMES[label]}</b>')
            view = QTextBrowser()
            view.setAccessibleName(f"{NAMES[label]} transcript")
            view.setPlaceholderText("The transcript appears here as it is decoded.")
            self.titles[label], self.views[label] = title, view
            grid.addWidget(title, 0, col)
            grid.addWidget(view, 1, col)
        grid.addWidget(self.caption, 2, 0, 1, 2)
        a, b = (self.views[k].verticalScrollBar() for k in ("stock", "mla"))
        a.valueChanged.connect(lambda v: b.setValue(int(v * b.maximum() / a.maximum())) if a.maximum() else None)

    def clear(self) -> None:
        for v in self.views.values():
            v.clear()
        self.caption.setText("")

    def append(self, label: str, text: str) -> None:
        view = self.views.get(label)
        if view is not None:
            cursor = view.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            cursor.insertText(text)
            view.ensureCursorVisible()

    def show_diff(self, word_diff: list[dict], wer: float | None) -> None:
        left, right, changed = diff_html(word_diff)
        self.views["stock"].setHtml(left)
        self.views["mla"].setHtml(right)
        if changed == 0:
            self.caption.setText("The two transcripts are identical (after normalising case and punctuation).")
        else:
            wer_text = f"; word error rate of MLA against stock {100 * wer:.1f}%" if wer is not None else ""
            self.caption.setText(
                f'{changed} differing stretch{"es" if changed != 1 else ""} (normalised words; '
                f'<span style="background:{REMOVED}">stock</span> vs '
                f'<span style="background:{ADDED}">MLA</span>){wer_text}.')
