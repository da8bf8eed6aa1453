"""Language ID of a transcript's text by langid.py (its model ships inside the package), for translation tests."""
from __future__ import annotations

# Whisper's most common languages: "is the output English, or still the speech's language (or another)?"
CANDIDATES = ["en", "zh", "de", "fr", "es", "it", "pt", "nl", "ja", "ko", "ru"]


def language_of(text: str) -> tuple[str, float]:
    """The most likely of CANDIDATES for `text`, with its probability among them."""
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(CANDIDATES)
    return identifier.classify(text)
