"""Key and mode: S-KEY (Deezer's self-supervised key network, ``analyzer/stages/skey.py``).

On the 47 key-annotated files (42 GTZAN clips with human labels, 5 renders), in two
folds of files, S-KEY alone scores 0.658 / 0.748 (weighted score) against 0.625 /
0.748 for the vote this stage used before (madmom's key CNN + 0.4 x Essentia's edma
profile strength), 0.558 / 0.717 for madmom's CNN alone and 0.592 / 0.691 for
Essentia alone; no vote of S-KEY with the others won on both folds
(``python -m bench.key``, figures in bench/RESULTS.md).  S-KEY is MIT-licensed, so
the key stage no longer uses madmom's non-commercial (CC BY-NC-SA) key model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.errors import ParameterError

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class KeyParams:
    # below this RMS (dBFS) there is nothing tonal to read
    min_level_db: float = -55.0


@dataclass(frozen=True)
class Key:
    key: int  # 0 = C .. 11 = B, -1 none
    mode: int  # 1 major, 0 minor, -1 none
    key_confidence: float
    mode_confidence: float
    probabilities: np.ndarray  # (24,) index pitch_class + 12 * minor

    @staticmethod
    def none() -> "Key":
        return Key(-1, -1, 0.0, 0.0, np.zeros(24))

    @property
    def label(self) -> str:
        if self.key < 0:
            return "none"
        return f"{PITCH_NAMES[self.key]} {'major' if self.mode == 1 else 'minor'}"


def estimate_key(*, probabilities: np.ndarray | None, samples: np.ndarray, params: KeyParams) -> Key:
    """The key and mode from S-KEY's 24 probabilities (C first, majors then minors), with confidences.

    ``probabilities`` None (input too short or silent for the network) or a signal
    below ``params.min_level_db`` gives no key.
    """
    if samples.size == 0 or probabilities is None:
        return Key.none()
    # the mean square a million samples at a time in float64: no float64 copy of a long file
    x = np.asarray(samples).reshape(-1)
    square_sum = sum(float(np.dot(b, b)) for b in (x[a : a + (1 << 20)].astype(np.float64)
                                                   for a in range(0, len(x), 1 << 20)))
    rms_db = 20 * np.log10(float(np.sqrt(square_sum / len(x))) + 1e-12) + 3.01
    if rms_db < params.min_level_db:
        return Key.none()
    p = np.asarray(probabilities, dtype=float).reshape(-1)
    if p.shape != (24,) or not np.isfinite(p).all() or p.min() < 0 or not p.sum() > 0:
        raise ParameterError(f"key probabilities must be 24 finite non-negative values, got {p.shape}")
    p = p / p.sum()
    best = int(p.argmax())
    key, mode = best % 12, 1 - best // 12
    major, minor = p[:12].sum(), p[12:].sum()
    # key confidence: the chosen key's share against the runner-up that is not
    # its relative (relative major/minor share the pitch class set)
    relative = (key + 9) % 12 + 12 if mode == 1 else (key + 3) % 12
    others = np.delete(p, [best, relative])
    key_conf = float(np.clip((p[best] - others.max()) / max(p[best], 1e-12), 0, 1))
    mode_conf = float(np.clip(abs(major - minor), 0, 1))
    return Key(key, mode, key_conf, mode_conf, p)
