"""Echo Nest-style music analysis from audio files."""

__version__ = "0.1.0"
