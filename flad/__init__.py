"""flad: sends files over the Belgian social-security batch channel and brings the replies home."""

__version__ = "0.1.0"
