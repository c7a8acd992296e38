"""The document: every field of the format, valid against the schema, deterministic."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from analyzer.document import dumps, load_schema, validate
from analyzer.errors import SchemaError

META = {"analyzer_version", "platform", "detailed_status", "status_code", "filename", "artist", "album", "title",
        "genre", "bitrate", "sample_rate", "seconds", "timestamp", "analysis_time", "input_process"}
TRACK = {"num_samples", "duration", "sample_md5", "decoder", "offset_seconds", "window_seconds",
         "analysis_sample_rate", "analysis_channels", "end_of_fade_in", "start_of_fade_out", "loudness", "tempo",
         "tempo_confidence", "time_signature", "time_signature_confidence", "key", "key_confidence", "mode",
         "mode_confidence"}
SECTION = {"start", "duration", "confidence", "loudness", "tempo", "tempo_confidence", "key", "key_confidence",
           "mode", "mode_confidence", "time_signature", "time_signature_confidence"}
SEGMENT = {"start", "duration", "confidence", "loudness_start", "loudness_max_time", "loudness_max", "pitches", "timbre"}

OK_FIXTURES = ["click_120_4-4", "click_120_mp3", "chords_a_minor", "tone_440_6dbfs", "fade_3_5", "silence",
               "wav_6ch_48k", "wav_mono_8k", "flac_96k_24bit", "unicode_name", "click_120_opus", "click_120_m4a"]


def test_schema_is_valid_2020_12():
    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", OK_FIXTURES)
def test_every_field_present_and_valid(fx, analyze_file, name):
    doc, _ = analyze_file(fx[name]["path"])
    validate(doc)
    assert META <= set(doc["meta"]) and TRACK <= set(doc["track"])
    for s in doc["sections"]:
        assert SECTION <= set(s)
    for s in doc["segments"]:
        assert SEGMENT <= set(s)
    assert "loudness_end" in doc["segments"][-1]
    # the strings and their versions (codestring only where libchromaprint is installed)
    assert {"echoprintstring", "synchstring", "rhythmstring", "echoprint_version"} <= set(doc["track"])
    t = doc["track"]
    assert t["duration"] == pytest.approx(t["num_samples"] / 22050, abs=1e-5)
    assert doc["meta"]["sample_rate"] == fx[name]["sample_rate"]


@pytest.mark.parametrize(
    "path,value",
    [
        (("track", "key_confidence"), 1.5),
        (("track", "key"), 12),
        (("track", "mode"), 2),
        (("segments", 0, "pitches"), [1.0] * 11),
        (("segments", 0, "loudness_max"), -80.0),
        (("beats",), [{"start": 1.0, "duration": 0.5, "confidence": 0.5}, {"start": 0.5, "duration": 0.5, "confidence": 0.5}]),
    ],
)
def test_invalid_documents_are_refused(fx, analyze_file, path, value):
    doc, _ = analyze_file(fx["click_120_4-4"]["path"])
    bad = copy.deepcopy(doc)
    target = bad
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(SchemaError):
        validate(bad)


def test_same_input_gives_identical_bytes_but_timing(fx, models):
    from analyzer.stages.audio import decode
    from analyzer.document import build_document
    from analyzer.pipeline import analyze

    path = fx["chords_d_major"]["path"]
    docs = []
    for stamp in (1, 2):
        d = build_document(analyze(decode(path), models=models), timestamp=stamp, analysis_time_s=float(stamp))
        d["meta"].pop("timestamp"), d["meta"].pop("analysis_time")
        docs.append(dumps(d))
    assert docs[0] == docs[1]


def test_pretty_output_is_the_same_document(fx, analyze_file):
    import orjson

    doc, _ = analyze_file(fx["click_120_4-4"]["path"])
    assert orjson.loads(dumps(doc, pretty=True)) == orjson.loads(dumps(doc))
