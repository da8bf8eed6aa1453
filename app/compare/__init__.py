"""The comparison window: stock Whisper vs Whisper-MLA on one file, memory charted live.

* `runner`    - drives one comparison on its own worker process;
* `charts`    - a live pyqtgraph memory chart with peak markers;
* `summary`   - the numbers: KV saving in % and bytes, peaks, speed;
* `diff_view` - both transcripts side by side, word differences highlighted;
* `window`    - puts them together.
"""
