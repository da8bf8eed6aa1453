"""Worker side: one transcription job, streamed back as segment / progress / done events."""
from __future__ import annotations

from app.model_choice import ModelChoice
from app.worker import protocol as P


def run(ctx, m: P.Msg) -> None:
    from engine.transcribe import TranscribeOptions, Transcriber

    job = m["job"]
    choice = ModelChoice.from_dict(m.get("model"))
    cancel = ctx.cancel_token(job)
    loaded = ctx.models.get(choice, m.get("models_dir"), lambda text: ctx.emit(P.STAGE, job, text=text),
                            calibration=[m["path"]])
    ctx.emit(P.MODEL, job, info=loaded.info.to_dict(), device=str(loaded.device), loads=ctx.models.loads)
    if cancel.cancelled:
        ctx.emit(P.CANCELLED, job, transcript=None, hard=False)
        return
    transcriber = Transcriber(loaded, TranscribeOptions(language=choice.language, task=choice.task,
                                                           beam_size=choice.beam_size,
                                                           word_timestamps=choice.word_timestamps))
    ctx.kv_source = transcriber.decoder.live_kv_bytes
    ctx.emit(P.STAGE, job, text="Transcribing")

    told = (None, None)

    def progress(p) -> None:
        nonlocal told
        if transcriber.language != told and transcriber.language[0]:  # known after the first window
            told = transcriber.language
            ctx.emit(P.LANGUAGE, job, language=told[0], probability=told[1], task=transcriber.task)
        ctx.emit(P.PROGRESS, job, done_s=p.done_s, total_s=p.total_s, elapsed_s=p.elapsed_s)

    def segment(s) -> None:
        ctx.emit(P.SEGMENT, job, segment=s.to_dict())

    transcript = transcriber.transcribe(m["path"], progress=progress, cancel=cancel, on_segment=segment)
    kind = P.DONE if transcript.complete else P.CANCELLED
    ctx.emit(kind, job, transcript=transcript.to_dict(), hard=False)
