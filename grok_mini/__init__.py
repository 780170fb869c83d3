"""grok-mini: a readable Flax NNX implementation of Grok-1, from a laptop toy to the 314B release."""

from grok_mini.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from grok_mini.config import PRESETS, ConfigError, GrokConfig, preset
from grok_mini.generate import generate
from grok_mini.model import Grok
from grok_mini.sharding import MeshError, make_mesh

__all__ = ["GrokConfig", "ConfigError", "PRESETS", "preset", "Grok", "CheckpointError", "load_checkpoint",
           "save_checkpoint", "generate", "make_mesh", "MeshError"]
__version__ = "0.1.0"
