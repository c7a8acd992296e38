"""analyze(audio) -> Analysis: every stage, each intermediate computed once and passed along."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from analyzer.stages import features as F
from analyzer.stages.audio import Audio
from analyzer.stages.fingerprint import FingerprintParams, Fingerprints, fingerprint
from analyzer.stages.key import Key, KeyParams, estimate_key
from analyzer.stages.loudness import FadeParams, Fades, detect_fades, pool_db, track_loudness
from analyzer.stages.rhythm import Rhythm, RhythmParams, analyze_rhythm, find_beats, harmonic_stability
from analyzer.stages.sections import Section, SectionParams, describe_sections, find_boundaries
from analyzer.stages.auditory import AuditoryParams, auditory_spectrogram
from analyzer.stages.descriptors import DescriptorParams, Descriptors, describe
from analyzer.stages.tagging import TagParams, Tags, tag
from analyzer.stages.segments import SegmentParams, Segments, build_segments, find_starts


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
    tags: TagParams = field(default_factory=TagParams)
    descriptors: DescriptorParams = field(default_factory=DescriptorParams)


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
    tags: Tags
    descriptors: Descriptors
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
    # the features more than one stage reads, made here so each stage's time is its own
    spec.log_mel_db, spec.chroma, spec.pitch_chroma  # noqa: B018
    clock.lap("spectrogram")

    acts = F.network_activations(y, sr, models=models, params=config.features)
    clock.lap("rhythm_networks")
    onset_env = F.onset_strength(log_mel_db=spec.log_mel_db)
    rhythm, stability = _rhythm(y, sr, acts=acts, onset_env=onset_env, onset_fps=spec.fps, duration_s=duration,
                                models=models, config=config, clock=clock)

    key = estimate_key(
        probabilities=F.skey_probabilities(samples=y, sr=sr, models=models, params=config.features),
        samples=y, params=config.key
    )
    clock.lap("key")

    aud = auditory_spectrogram(y, sr, config.auditory)
    # on the 22050 Hz STFT's frame grid: the loudness for the section features and the fades
    factor, n_frames = config.features.hop_length // config.auditory.hop_length, spec.n_frames
    frame_db = pool_db(aud.loudness_db, factor, n_frames)
    fades = detect_fades(frame_db=frame_db, fps=spec.fps, duration_s=duration, params=config.fades)
    clock.lap("loudness")

    seg_starts = find_starts(aud=aud, onset_act=acts.onset, act_fps=acts.fps, chroma=spec.chroma,
                             chroma_fps=spec.fps, params=config.segments)
    segments = build_segments(starts=seg_starts, aud=aud, chroma=spec.pitch_chroma, chroma_fps=spec.fps,
                              duration_s=duration, params=config.segments)
    loud = track_loudness(bands_db=aud.bands_db, fps=aud.fps, fades=fades)
    del aud
    clock.lap("segments")

    sections = _sections(y, sr, spec=spec, frame_db=frame_db, onset_env=onset_env, rhythm=rhythm, key=key,
                         segments=segments, duration_s=duration, models=models, config=config)
    clock.lap("sections")

    prints = fingerprint(y, sr, config.fingerprint)
    clock.lap("fingerprints")

    tags = tag(y, sr, mtt=models.mtt, msd=models.msd, params=config.tags)
    clock.lap("tags")
    descriptors = describe(
        samples=y, sr=sr, log_mel_db=spec.log_mel_db, loudness_db=loud, segment_count=len(segments.start),
        duration_s=duration, harmonic_stability=stability,
        pulse=float(np.mean(rhythm.beats.confidence)) if len(rhythm.beats.start) else 0.0, mtt=tags.probabilities("mtt"),
        msd=tags.probabilities("msd"), params=config.descriptors,
    )
    clock.lap("descriptors")
    return Analysis(audio=audio, loudness=loud, fades=fades, rhythm=rhythm, key=key, segments=segments,
                    sections=sections, fingerprints=prints, tags=tags, descriptors=descriptors,
                    seconds_by_stage=clock.laps)


def _rhythm(
    y: np.ndarray, sr: int, *, acts: F.NetworkActivations, onset_env: np.ndarray, onset_fps: float, duration_s: float,
    models: F.Models, config: AnalysisConfig, clock: _Clock,
) -> tuple[Rhythm, float]:
    """Beats, then (when its weight is not 0) the bar network on them, then meter, downbeats, bars and tatums;
    and the harmonic stability the pulse gate read (the audio features' speechiness reads it too).

    The CLP chroma serves both: how much the harmony holds exempts soft-attack music from the pulse gate
    (``RhythmParams.tonal_stability``), and it is the bar network's harmonic input.
    """
    clp = F.clp_chroma(y, sr, params=config.features)
    clock.lap("clp_chroma")
    stability = harmonic_stability(chroma=clp, fps=F.MADMOM_FPS)
    beat_times, beat_strength = find_beats(
        beat_act=acts.beat, downbeat_beat_act=acts.downbeat_beat, downbeat_act=acts.downbeat, fps=acts.fps,
        params=config.rhythm, harmonic_stability=stability,
    )
    bar_act = None
    if len(beat_times) and config.rhythm.bar_net_weight > 0:
        clock.lap("rhythm_decoding")
        bar_act = F.bar_activation(beat_times=beat_times, percussive=acts.percussive, clp=clp, models=models)
        clock.lap("bar_network")
    rhythm = analyze_rhythm(
        beat_times=beat_times, beat_strength=beat_strength, downbeat_beat_act=acts.downbeat_beat,
        downbeat_act=acts.downbeat, fps=acts.fps, duration_s=duration_s, onset_env=onset_env, onset_fps=onset_fps,
        params=config.rhythm, bar_act=bar_act,
    )
    clock.lap("rhythm_decoding")
    return rhythm, stability


def _sections(
    y: np.ndarray, sr: int, *, spec: F.SpectralFeatures, frame_db: np.ndarray, onset_env: np.ndarray, rhythm: Rhythm,
    key: Key, segments: Segments, duration_s: float, models: F.Models, config: AnalysisConfig,
) -> list[Section]:
    """Section boundaries and labels, then each section's fields (its key from the key network on its samples)."""
    bounds = find_boundaries(chroma=spec.chroma, mfcc=spec.mfcc, frame_db=frame_db, fps=spec.fps,
                             beat_times=rhythm.beats.start, bar_times=rhythm.bars.start, duration_s=duration_s,
                             params=config.sections)

    def key_of_span(start_s: float, end_s: float) -> Key:
        piece = y[int(start_s * sr) : int(end_s * sr)]
        probabilities = F.skey_probabilities(samples=piece, sr=sr, models=models, params=config.features)
        return estimate_key(probabilities=probabilities, samples=piece, params=config.key)

    return describe_sections(
        bounds, duration_s=duration_s, segments=segments, frame_db=frame_db, onset_env=onset_env, fps=spec.fps,
        rhythm=rhythm, rhythm_params=config.rhythm, track_key=key, key_of_span=key_of_span, params=config.sections,
    )


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.t
        self.t = now
