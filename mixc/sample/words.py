"""The sample data's word lists, read once from words.toml (shipped as package data)."""

from __future__ import annotations

import tomllib
from importlib.resources import files

WORDS: dict = tomllib.loads(files(__package__).joinpath("words.toml").read_text(encoding="utf-8"))
