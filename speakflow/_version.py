"""The package version, apart from ``speakflow/__init__`` so modules can name it
without importing the package face."""

__version__ = "0.1.0"
