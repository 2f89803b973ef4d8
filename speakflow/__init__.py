"""SpeakFlow: a real-time speech-to-text relay.

Reading order follows the audio: ``protocol`` (frames in) -> ``session``
(connection -> session -> per-source channel) -> ``providers`` (vendor
codecs and shells) -> transcripts back out through ``protocol``.
"""

__version__ = "0.1.0"
