"""grok-mini: a readable Flax NNX implementation of Grok-1, from a laptop toy to the 314B release."""

from grok_mini.checkpoint import CheckpointError, save_checkpoint
from grok_mini.config import PRESETS, ConfigError, GrokConfig, preset
from grok_mini.generate import generate, stream
from grok_mini.load import load_checkpoint, load_hf, shard_model
from grok_mini.model import Grok, recording
from grok_mini.sharding import MeshError, make_mesh
from grok_mini.tokenizer import Tokenizer, load_grok1_tokenizer, load_tokenizer, train_tokenizer

__all__ = ["GrokConfig", "ConfigError", "PRESETS", "preset", "Grok", "recording", "CheckpointError",
           "load_checkpoint", "load_hf", "save_checkpoint", "shard_model", "generate", "stream", "make_mesh",
           "MeshError", "Tokenizer", "load_grok1_tokenizer", "load_tokenizer", "train_tokenizer"]
__version__ = "0.1.0"
