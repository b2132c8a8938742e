"""facenas: hardware-aware multi-objective NAS for face-segmentation models."""

__version__ = "0.1.0"
