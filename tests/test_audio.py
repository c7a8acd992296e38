"""Decoding: every container, channel count and rate to 22050 Hz mono; metadata; excerpts; errors."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer.stages.audio import ANALYSIS_SR, DecodeParams, decode
from analyzer.errors import DecodeError, InputError, ParameterError

FORMATS = ["click_120_wav", "click_120_flac", "click_120_ogg", "click_120_opus", "click_120_mp3", "click_120_m4a"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_decodes_to_analysis_rate(fx, name):
    truth = fx[name]
    audio = decode(truth["path"])
    assert audio.sr == ANALYSIS_SR
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # lossy codecs add encoder delay/padding of a few ms; 50 ms is generous
    assert abs(audio.duration_s - truth["duration"]) < 0.05
    assert audio.source.sample_rate_hz == truth["sample_rate"]
    assert audio.source.channels == truth["channels"]
    assert audio.source.decoder.startswith("PyAV")
    assert 0.05 < np.abs(audio.samples).max() <= 1.0


@pytest.mark.parametrize("name", ["wav_6ch_48k", "wav_mono_8k", "flac_96k_24bit", "unicode_name"])
def test_channel_counts_and_rates(fx, name):
    truth = fx[name]
    audio = decode(truth["path"])
    assert audio.source.channels == truth["channels"]
    assert audio.source.sample_rate_hz == truth["sample_rate"]
    assert abs(audio.duration_s - truth["duration"]) < 0.01
    assert audio.md5 == decode(truth["path"]).md5  # deterministic samples


@pytest.mark.parametrize("name", ["click_120_mp3", "click_120_flac"])
def test_tags_are_read(fx, name):
    tags = decode(fx[name]["path"]).source.tags
    assert tags == fx[name]["tags"]


def test_bitrate_reported(fx):
    # 30 s of a click track at the encoder's nominal rate: within a factor of 2
    assert 64 <= decode(fx["click_120_mp3"]["path"]).source.bitrate_kbps <= 320


def test_excerpt_offset_and_duration(fx):
    path = fx["click_120_4-4"]["path"]
    whole = decode(path)
    part = decode(path, params=DecodeParams(offset_s=10.0, duration_s=5.0))
    assert abs(part.duration_s - 5.0) < 0.01
    assert part.offset_s == 10.0 and abs(part.window_s - 5.0) < 0.01
    # the excerpt is the same audio as the slice of the whole (resampler edge effects aside)
    a = whole.samples[10 * ANALYSIS_SR + 500 : 15 * ANALYSIS_SR - 500]
    b = part.samples[500 : 5 * ANALYSIS_SR - 500]
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).max() < 1e-3


def test_offset_past_end_is_an_error_that_says_so(fx):
    with pytest.raises(ParameterError, match=r"--offset 100 s is past the end"):
        decode(fx["click_120_4-4"]["path"], params=DecodeParams(offset_s=100.0))


@pytest.mark.parametrize(
    "name,exc,words",
    [
        ("bad_text_as_mp3", DecodeError, "not a readable audio file"),
        ("bad_empty_wav", DecodeError, "empty file"),
        ("bad_truncated_mp3", DecodeError, "truncated"),
        ("bad_truncated_mp3_300b", DecodeError, "audio"),
        ("short_clip", DecodeError, "at least"),
    ],
)
def test_bad_files_raise_one_clear_error(fx, name, exc, words):
    with pytest.raises(exc) as info:
        decode(fx[name]["path"])
    msg = str(info.value)
    assert words in msg and "\n" not in msg


def test_truncated_file_can_be_analysed_on_request(fx):
    audio = decode(fx["bad_truncated_mp3"]["path"], params=DecodeParams(allow_truncated=True))
    assert abs(audio.duration_s - fx["bad_truncated_mp3"]["approx_duration"]) < 1.0


def test_missing_and_folder_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        decode(tmp_path / "nope.mp3")
    with pytest.raises(InputError, match="folder"):
        decode(tmp_path)


def test_huge_file_is_refused_before_decoding(fx):
    with pytest.raises(InputError, match="limit"):
        decode(fx["click_120_4-4"]["path"], params=DecodeParams(max_duration_s=10.0))


def test_the_duration_limit_allows_a_header_that_rounds_up(fx):
    # a 30 s mp3 declares a little more than 30 s (encoder padding), as a 60-minute one declares
    # 3600.000045 s: a limit equal to the music's length must accept it, and say the limit exactly
    mp3 = fx["click_120_mp3"]
    audio = decode(mp3["path"], params=DecodeParams(max_duration_s=30.0))
    assert audio.duration_s == pytest.approx(30.0, abs=0.1)
    with pytest.raises(InputError, match=r"30\.\d s of audio; the limit is 28\.5 s"):
        decode(mp3["path"], params=DecodeParams(max_duration_s=28.5))


def test_a_pipe_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "stream.mp3"
    os.mkfifo(fifo)
    # opening a FIFO for reading would wait for a writer forever: refused from its type alone
    with pytest.raises(InputError, match="not a regular file"):
        decode(fifo)


def test_odd_names_are_quoted_in_messages(tmp_path):
    path = tmp_path / "bad\nname\x1b[31m.mp3"
    path.write_bytes(b"not audio at all, just text" * 10)
    with pytest.raises(DecodeError) as e:
        decode(path)
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg and "\\n" in msg


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "flac"])
def test_bytes_decode_exactly_as_the_file(tmp_path, ext):
    # a Spark executor hands decode the file's bytes: the same samples and meta as from the path
    from dataclasses import asdict

    from fixtures import synth

    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=3)
    path = tmp_path / f"click.{ext}"
    synth.encode(path, x, sr, metadata=synth.TAGS)
    params = DecodeParams(offset_s=0.5, duration_s=2.0)
    from_path, from_bytes = decode(path, params=params), decode(path, params=params, data=path.read_bytes())
    assert from_bytes.md5 == from_path.md5  # our own output, bit for bit: the same decoder on the same bytes
    assert asdict(from_bytes.source) == asdict(from_path.source)


def test_bad_bytes_raise_the_errors_of_the_file(tmp_path):
    with pytest.raises(DecodeError, match="empty file"):
        decode(tmp_path / "x.wav", data=b"")
    with pytest.raises(DecodeError, match="not a readable audio file"):
        decode(tmp_path / "x.mp3", data=b"plain text, not audio\n" * 20)
