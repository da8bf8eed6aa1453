"""The transcript view keeps segments in time order however they arrive (batched lanes, recovered speech)."""
from __future__ import annotations

from app.widgets.transcript_view import TranscriptView
from engine.results import Segment


def _seg(i: int, start: float, text: str) -> Segment:
    return Segment(i, start, start + 2.0, text, (), -0.2, 1.2, 0.01, 0.0)


def test_out_of_order_segments_land_in_time_order(qtbot):
    view = TranscriptView()
    qtbot.addWidget(view)
    view.show_segments("talk.flac", [])
    # a batch of two lanes arrives: 0:00 and 1:00, then the lanes' next chunks, then recovered speech
    for seg in (_seg(0, 0.0, "first"), _seg(1, 60.0, "third"), _seg(2, 30.0, "second"), _seg(3, 90.0, "fourth"),
                _seg(4, 45.0, "recovered")):
        view.append(seg)
    lines = view.browser.toPlainText().splitlines()
    assert [line.split()[-1] for line in lines] == ["first", "second", "recovered", "third", "fourth"]
    assert lines[1].startswith("[0:30.0]") and view.segment_count == 5
    assert view.plain_text().split() == ["first", "second", "recovered", "third", "fourth"]
    view.search.setText("recovered")
    assert view.match_count == 1
