"""hstu_tutorial: learn HSTU (Zhai et al., ICML 2024) with a real, fast, tested implementation."""

from hstu_tutorial.presets import Preset, get_preset

__version__ = "0.1.0"
__all__ = ["Preset", "get_preset", "__version__"]
