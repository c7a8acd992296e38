"""The shared madmom front end reproduces madmom's own processors."""

from __future__ import annotations

import numpy as np

from analyzer import features as F
from analyzer.audio import DecodeParams, decode


def test_shared_front_end_matches_madmom_processors(fx, models):
    from madmom.features.beats import RNNBeatProcessor
    from madmom.features.downbeats import RNNDownBeatProcessor
    from madmom.features.onsets import RNNOnsetProcessor

    audio = decode(fx["click_100_3-4"]["path"], params=DecodeParams(duration_s=8.0))
    y44 = F.upsample_for_madmom(audio.samples, audio.sr)
    front = F.MadmomFrontEnd(y44)
    acts = F.rhythm_activations(front=front, models=models)
    onset = F.onset_activation(front=front, models=models)

    np.testing.assert_allclose(acts.beat, RNNBeatProcessor()(y44), atol=1e-5)
    down = RNNDownBeatProcessor()(y44)  # (frames, 2): beat, downbeat
    np.testing.assert_allclose(acts.downbeat_beat, down[:, 0], atol=1e-5)
    np.testing.assert_allclose(acts.downbeat, down[:, 1], atol=1e-5)
    np.testing.assert_allclose(onset, RNNOnsetProcessor()(y44), atol=1e-5)
    # and the clicks are there: one onset peak per click
    assert onset.max() > 0.5
