"""Language names for Whisper's language codes, so the GUI never shows a bare "zh" (no torch import here)."""
from __future__ import annotations

# The languages Whisper's multilingual models know (ISO 639-1 codes, plus haw and yue), by English name.
NAMES = {
    "en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ru": "Russian", "ko": "Korean",
    "fr": "French", "ja": "Japanese", "pt": "Portuguese", "tr": "Turkish", "pl": "Polish", "ca": "Catalan",
    "nl": "Dutch", "ar": "Arabic", "sv": "Swedish", "it": "Italian", "id": "Indonesian", "hi": "Hindi",
    "fi": "Finnish", "vi": "Vietnamese", "he": "Hebrew", "uk": "Ukrainian", "el": "Greek", "ms": "Malay",
    "cs": "Czech", "ro": "Romanian", "da": "Danish", "hu": "Hungarian", "ta": "Tamil", "no": "Norwegian",
    "th": "Thai", "ur": "Urdu", "hr": "Croatian", "bg": "Bulgarian", "lt": "Lithuanian", "la": "Latin",
    "mi": "Maori", "ml": "Malayalam", "cy": "Welsh", "sk": "Slovak", "te": "Telugu", "fa": "Persian",
    "lv": "Latvian", "bn": "Bengali", "sr": "Serbian", "az": "Azerbaijani", "sl": "Slovenian", "kn": "Kannada",
    "et": "Estonian", "mk": "Macedonian", "br": "Breton", "eu": "Basque", "is": "Icelandic", "hy": "Armenian",
    "ne": "Nepali", "mn": "Mongolian", "bs": "Bosnian", "kk": "Kazakh", "sq": "Albanian", "sw": "Swahili",
    "gl": "Galician", "mr": "Marathi", "pa": "Punjabi", "si": "Sinhala", "km": "Khmer", "sn": "Shona",
    "yo": "Yoruba", "so": "Somali", "af": "Afrikaans", "oc": "Occitan", "ka": "Georgian", "be": "Belarusian",
    "tg": "Tajik", "sd": "Sindhi", "gu": "Gujarati", "am": "Amharic", "yi": "Yiddish", "lo": "Lao",
    "uz": "Uzbek", "fo": "Faroese", "ht": "Haitian Creole", "ps": "Pashto", "tk": "Turkmen", "nn": "Nynorsk",
    "mt": "Maltese", "sa": "Sanskrit", "lb": "Luxembourgish", "my": "Myanmar", "bo": "Tibetan", "tl": "Tagalog",
    "mg": "Malagasy", "as": "Assamese", "tt": "Tatar", "haw": "Hawaiian", "ln": "Lingala", "ha": "Hausa",
    "ba": "Bashkir", "jw": "Javanese", "su": "Sundanese", "yue": "Cantonese",
}
# Offered first in the language picker (the rest follow by name).
COMMON = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "tr", "ar", "hi", "ja", "ko", "zh")


def name(code: str | None) -> str:
    """'Chinese' for 'zh'; an unknown code as it is."""
    return NAMES.get(code or "", code or "")


def label(code: str) -> str:
    """What the picker shows: 'German (de)'."""
    return f"{name(code)} ({code})" if code in NAMES else code


def picker_order() -> list[str]:
    """The common languages first, then every other Whisper language by name."""
    rest = sorted((c for c in NAMES if c not in COMMON), key=name)
    return [*COMMON, *rest]


def code_for(text: str) -> str | None:
    """The code of what a user typed or picked: 'de', 'German', 'german' or 'German (de)'; None for empty."""
    key = text.strip().lower()
    if not key:
        return None
    if key.endswith(")") and "(" in key:
        key = key[key.rindex("(") + 1:-1].strip()
    if key in NAMES:
        return key
    by_name = {n.lower(): c for c, n in NAMES.items()}
    return by_name.get(key, key)
