"""Token ids and decoding rules of one Whisper model, read from its own files.

The transcriber needs a handful of special ids (start of transcript, end, no-timestamps,
first timestamp, languages, tasks) and the suppress lists. They differ between English-only,
multilingual and large-v3 vocabularies, so nothing here is hard-coded: everything comes from
the model's generation config and tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationSettings:
    sot: int
    eot: int
    no_timestamps: int
    timestamp_begin: int
    vocab_size: int
    multilingual: bool
    max_target_positions: int
    n_mels: int
    sot_prev: int | None = None
    no_speech: int | None = None
    transcribe: int | None = None
    translate: int | None = None
    lang_to_id: dict[str, int] = field(default_factory=dict)  # "en" -> token id
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    alignment_heads: tuple[tuple[int, int], ...] = ()
    max_initial_timestamp_index: int = 50  # first timestamp at most 1.0 s into the window

    @property
    def id_to_lang(self) -> dict[int, str]:
        return {v: k for k, v in self.lang_to_id.items()}

    def sot_sequence(self, language: str | None, task: str = "transcribe") -> list[int]:
        """The decoder prompt: <|startoftranscript|> [<|lang|> <|task|>] for multilingual models."""
        seq = [self.sot]
        if self.multilingual:
            if language is None:
                raise ValueError("a multilingual model needs a language (detect it first)")
            if language not in self.lang_to_id:
                raise ValueError(f"unknown language code {language!r}")
            seq.append(self.lang_to_id[language])
            task_id = self.translate if task == "translate" else self.transcribe
            if task_id is not None:
                seq.append(task_id)
        return seq

    def all_suppressed(self) -> list[int]:
        """openai-whisper's default suppression: non-speech symbols plus control tokens."""
        ids = set(self.suppress_tokens)
        ids.update(t for t in (self.transcribe, self.translate, self.sot, self.sot_prev, self.no_speech) if t is not None)
        ids.update(self.lang_to_id.values())
        return sorted(i for i in ids if 0 <= i < self.vocab_size)


def settings_from_model(config, generation_config, tokenizer) -> GenerationSettings:
    """Build settings from a transformers WhisperConfig, GenerationConfig and tokenizer."""
    def tid(token: str) -> int | None:
        # Unknown tokens map to the unk id (<|endoftext|> in Whisper): treat that as absent.
        i = tokenizer.convert_tokens_to_ids(token)
        return None if i is None or i == tokenizer.unk_token_id else int(i)

    gen = generation_config
    no_ts = getattr(gen, "no_timestamps_token_id", None) or tid("<|notimestamps|>")
    if no_ts is None:
        raise ValueError("model has no <|notimestamps|> token: not a Whisper vocabulary")
    lang_to_id_raw = getattr(gen, "lang_to_id", None) or {}
    lang_to_id = {k.strip("<|>"): int(v) for k, v in lang_to_id_raw.items()}
    task_to_id = getattr(gen, "task_to_id", None) or {}
    multilingual = bool(getattr(gen, "is_multilingual", config.vocab_size >= 51865)) and bool(lang_to_id)
    heads = getattr(gen, "alignment_heads", None) or ()
    no_speech = tid("<|nospeech|>") or tid("<|nocaptions|>")
    return GenerationSettings(
        sot=int(config.decoder_start_token_id),
        eot=int(gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0]),
        no_timestamps=int(no_ts),
        timestamp_begin=int(no_ts) + 1,
        vocab_size=int(config.vocab_size),
        multilingual=multilingual,
        max_target_positions=int(config.max_target_positions),
        n_mels=int(config.num_mel_bins),
        sot_prev=getattr(gen, "prev_sot_token_id", None) or tid("<|startofprev|>"),
        no_speech=no_speech,
        transcribe=task_to_id.get("transcribe") or tid("<|transcribe|>"),
        translate=task_to_id.get("translate") or tid("<|translate|>"),
        lang_to_id=lang_to_id,
        suppress_tokens=tuple(int(t) for t in (getattr(gen, "suppress_tokens", None) or config.suppress_tokens or ())),
        begin_suppress_tokens=tuple(int(t) for t in (getattr(gen, "begin_suppress_tokens", None) or config.begin_suppress_tokens or ())),
        alignment_heads=tuple((int(a), int(b)) for a, b in heads),
        max_initial_timestamp_index=int(getattr(gen, "max_initial_timestamp_index", None) or 50),
    )
