"""Errors every layer raises; a leaf module, so raising one imports nothing else of initlab."""


class ConfigError(ValueError):
  """A config key or value that initlab cannot run with (the message names the key)."""
