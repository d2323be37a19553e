"""Test support that ships with the package: synthetic SadTalker checkpoints in the official
format (``synthetic_checkpoints``), a per-machine cache of them (``checkpoint_cache``) and
sha256 bookkeeping for fixture files (``checksums``).

The real SadTalker weights cannot be redistributed; the synthetic ones have the official file
names, keys, shapes and dtypes and deterministic values, so the loaders, engines and parity
checks can be exercised anywhere.
"""
