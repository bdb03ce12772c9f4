"""avdet: dense audio-visual event detection, from raw video to an event timeline."""

__version__ = "0.1.0"
