"""analyze(audio) -> Analysis: every stage, each intermediate computed once and passed along."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import features as F
from .audio import Audio
from .fingerprint import FingerprintParams, Fingerprints, fingerprint
from .key import Key, KeyParams, estimate_key
from .loudness import FadeParams, Fades, detect_fades, pool_db, span_loudness
from .rhythm import Rhythm, RhythmParams, analyze_rhythm, decode_meter, estimate_tempo, find_beats
from .sections import SectionParams, find_boundaries
from .auditory import AuditoryParams, auditory_spectrogram
from .segments import SegmentParams, Segments, build_segments, find_starts


@dataclass(frozen=True)
class AnalysisConfig:
    features: F.FeatureParams = field(default_factory=F.FeatureParams)
    auditory: AuditoryParams = field(default_factory=AuditoryParams)
    rhythm: RhythmParams = field(default_factory=RhythmParams)
    key: KeyParams = field(default_factory=KeyParams)
    segments: SegmentParams = field(default_factory=SegmentParams)
    sections: SectionParams = field(default_factory=SectionParams)
    fades: FadeParams = field(default_factory=FadeParams)
    fingerprint: FingerprintParams = field(default_factory=FingerprintParams)
    # sections shorter than this take the track's key rather than a noisy one of their own
    min_section_key_s: float = 6.0


@dataclass(frozen=True)
class Section:
    start: float
    duration: float
    confidence: float
    loudness: float
    tempo: float
    tempo_confidence: float
    key: int
    key_confidence: float
    mode: int
    mode_confidence: float
    time_signature: int
    time_signature_confidence: float
    label: str  # repeated sections share a label (A, B, A ...)


@dataclass(frozen=True)
class Analysis:
    audio: Audio
    loudness: float
    fades: Fades
    rhythm: Rhythm
    key: Key
    segments: Segments
    sections: list[Section]
    fingerprints: Fingerprints
    seconds_by_stage: dict[str, float]


def analyze(audio: Audio, *, models: F.Models, config: AnalysisConfig = AnalysisConfig()) -> Analysis:
    with warnings.catch_warnings():
        # librosa warns on degenerate frames (silence, a single tone); the
        # stages handle those cases themselves and stderr stays clean
        warnings.simplefilter("ignore", UserWarning)
        return _analyze(audio, models=models, config=config)


def _analyze(audio: Audio, *, models: F.Models, config: AnalysisConfig) -> Analysis:
    clock = _Clock()
    y, sr = audio.samples, audio.sr
    duration = audio.duration_s

    spec = F.SpectralFeatures(samples=y, sr=sr, params=config.features)
    fps = spec.fps
    # the features more than one stage reads, made here so each stage's time is its own
    spec.log_mel_db, spec.chroma  # noqa: B018
    clock.lap("spectrogram")

    acts = F.network_activations(y, sr, models=models, params=config.features)
    clock.lap("rhythm_networks")

    onset_env = F.onset_strength(log_mel_db=spec.log_mel_db)
    beat_times, beat_strength = find_beats(
        beat_act=acts.beat, downbeat_beat_act=acts.downbeat_beat, downbeat_act=acts.downbeat, fps=acts.fps,
        params=config.rhythm,
    )
    bar_act = None
    if len(beat_times) and config.rhythm.bar_net_weight > 0:
        clock.lap("rhythm_decoding")
        bar_act = F.bar_activation(beat_times=beat_times, percussive=acts.percussive,
                                   clp=F.clp_chroma(y, sr, params=config.features), models=models)
        clock.lap("bar_network")
    rhythm = analyze_rhythm(
        beat_times=beat_times,
        beat_strength=beat_strength,
        downbeat_beat_act=acts.downbeat_beat,
        downbeat_act=acts.downbeat,
        fps=acts.fps,
        duration_s=duration,
        onset_env=onset_env,
        onset_fps=fps,
        params=config.rhythm,
        bar_act=bar_act,
    )
    clock.lap("rhythm_decoding")

    key = estimate_key(
        probabilities=F.skey_probabilities(samples=y, sr=sr, models=models, params=config.features),
        samples=y, params=config.key
    )
    clock.lap("key")

    aud = auditory_spectrogram(y, sr, config.auditory)
    # on the 22050 Hz STFT's frame grid: the loudness for the section features, the ear-weighted
    # level (which follows a gain ramp dB for dB) for the fades
    factor, n_frames = config.features.hop_length // config.auditory.hop_length, spec.n_frames
    frame_db = pool_db(aud.loudness_db, factor, n_frames)
    fades = detect_fades(frame_db=pool_db(aud.power_db, factor, n_frames), fps=fps, duration_s=duration,
                         params=config.fades)
    clock.lap("loudness")

    seg_starts = find_starts(aud=aud, onset_act=acts.onset, act_fps=acts.fps, chroma=spec.chroma,
                             chroma_fps=fps, params=config.segments)
    segments = build_segments(starts=seg_starts, aud=aud, chroma=spec.chroma, chroma_fps=fps, duration_s=duration,
                              params=config.segments)
    del aud
    loud = _body_loudness(segments, fades, duration)
    clock.lap("segments")

    bounds = find_boundaries(
        chroma=spec.chroma,
        mfcc=spec.mfcc,
        frame_db=frame_db,
        fps=fps,
        beat_times=rhythm.beats.start,
        bar_times=rhythm.bars.start,
        duration_s=duration,
        params=config.sections,
    )
    sections = _describe_sections(
        starts=bounds.start,
        confidences=bounds.confidence,
        labels=bounds.label,
        duration_s=duration,
        y=y,
        sr=sr,
        segments=segments,
        frame_db=frame_db,
        onset_env=onset_env,
        fps=fps,
        rhythm=rhythm,
        track_key=key,
        models=models,
        config=config,
    )
    clock.lap("sections")

    prints = fingerprint(y, sr, config.fingerprint)
    clock.lap("fingerprints")
    return Analysis(
        audio=audio,
        loudness=loud,
        fades=fades,
        rhythm=rhythm,
        key=key,
        segments=segments,
        sections=sections,
        fingerprints=prints,
        seconds_by_stage=clock.laps,
    )


def _describe_sections(
    *,
    starts: np.ndarray,
    confidences: np.ndarray,
    labels: tuple[str, ...],
    duration_s: float,
    y: np.ndarray,
    sr: int,
    segments: Segments,
    frame_db: np.ndarray,
    onset_env: np.ndarray,
    fps: float,
    rhythm: Rhythm,
    track_key: Key,
    models: F.Models,
    config: AnalysisConfig,
) -> list[Section]:
    ends = np.append(starts[1:], duration_s)
    beats = rhythm.beats.start
    out: list[Section] = []
    for start, end, conf, label in zip(starts, ends, confidences, labels):
        a = int(round(start * fps))
        b = max(int(round(end * fps)), a + 1)
        loud = span_loudness(segment_start_s=segments.start, loudness_max_db=segments.loudness_max, from_s=start,
                             to_s=end)
        in_sec = (beats >= start) & (beats < end)
        sb = beats[in_sec]
        tempo, tempo_conf = estimate_tempo(sb, onset_env=onset_env, onset_fps=fps)
        if len(sb) >= 4:
            # the track's own per-beat evidence, so a section's meter is decoded
            # from exactly what the track's meter was
            _, meter, meter_conf, _ = decode_meter(down_at_beats=rhythm.downbeat_evidence[in_sec], params=config.rhythm)
        else:
            meter, meter_conf = rhythm.time_signature, 0.0
        if float(frame_db[a:b].max()) <= config.sections.silence_db:
            # a section of silence (see sections._add_silence) has no pulse, key or mode to report
            out.append(
                Section(start=float(start), duration=float(end - start), confidence=float(conf), loudness=loud,
                        tempo=0.0, tempo_confidence=0.0, key=-1, key_confidence=0.0, mode=-1, mode_confidence=0.0,
                        time_signature=rhythm.time_signature, time_signature_confidence=0.0, label=label)
            )
            continue
        if end - start >= config.min_section_key_s and track_key.key >= 0:
            piece = y[int(start * sr) : int(end * sr)]
            sk = estimate_key(
                probabilities=F.skey_probabilities(samples=piece, sr=sr, models=models, params=config.features),
                samples=piece,
                params=config.key,
            )
        else:
            sk = track_key
        out.append(
            Section(
                start=float(start),
                duration=float(end - start),
                confidence=float(conf),
                loudness=loud,
                tempo=tempo,
                tempo_confidence=tempo_conf,
                key=sk.key,
                key_confidence=sk.key_confidence,
                mode=sk.mode,
                mode_confidence=sk.mode_confidence,
                time_signature=meter,
                time_signature_confidence=meter_conf,
                label=label,
            )
        )
    return out


def _body_loudness(segments: Segments, fades: Fades, duration_s: float) -> float:
    """The track's loudness: its segments' mean loudness_max between the fades (all of them if none lie there)."""
    body = span_loudness(segment_start_s=segments.start, loudness_max_db=segments.loudness_max,
                         from_s=fades.end_of_fade_in, to_s=fades.start_of_fade_out)
    if body <= -60.0:
        body = span_loudness(segment_start_s=segments.start, loudness_max_db=segments.loudness_max, from_s=0.0,
                             to_s=duration_s)
    return body


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.t
        self.t = now
