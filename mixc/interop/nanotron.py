"""nanotron interop: training configs in, recipe blocks out (see docs/nanotron.md).

`import_nanotron` reads one or more nanotron training configs (YAML) and writes a mixc recipe
plus one mix per data stage; `export_nanotron` turns a recipe into the blocks nanotron needs
for each run. Importing an export gives the same recipe back. The work is split by direction:

- nanotron_config: the config parts mixc reads, as pydantic models with located errors;
- nanotron_read: a config -> a run of phases (how its values fit together), merging resumed runs;
- nanotron_import: runs -> recipe.yaml and mixes/, validated before anything is kept;
- nanotron_write: a recipe (and a built store) -> nanotron's data_stages, tokens and scheduler;
- nanotron_format, nanotron_guess: shared format facts; categories and languages of sources.
"""

from __future__ import annotations

from ..spec import CATEGORIES
from .nanotron_format import KNOWN_MODELS, source_name
from .nanotron_guess import classify, guess_category, guess_language
from .nanotron_import import ImportResult, import_nanotron
from .nanotron_read import RunConfig, merge_runs, read_config
from .nanotron_write import export_nanotron, export_text, shard_folder, write_export

__all__ = ["CATEGORIES", "KNOWN_MODELS", "ImportResult", "RunConfig", "classify", "export_nanotron", "export_text",
           "guess_category", "guess_language", "import_nanotron", "merge_runs", "read_config", "shard_folder", "source_name",
           "write_export"]
