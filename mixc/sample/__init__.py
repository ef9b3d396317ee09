"""Offline sample data: deterministic documents for a source's category and language.

Nothing can be downloaded on a fresh machine, so every source can be read from its *sample*
instead of its real location: `sample://...` sources always are, and `mixc build` can map every
catalog source to its sample. A sample is NOT real data. It is generated text with the shape of
the real thing and with structure a tiny model can learn quickly:

  web        prose from sentence templates over small word lists: hand-written ones for
             English, French, Spanish, German, Italian, Portuguese and Russian, and pronounceable
             pseudo-words in the right script for every other language (CJK, Hangul, Thai,
             Arabic, Devanagari, Greek, ...); `mul_*` picks a language per document
             (prose.py, languages.py, web.py)
  code       files in the source's programming language (Python, JavaScript, TypeScript, Java,
             C, C++, C#, Go, Rust, Swift, PHP, Ruby, Shell, SQL, HTML, Markdown, notebooks)
             (code.py)
  math       word problems with worked solutions; every step's arithmetic is correct (arithmetic.py)
  reasoning  questions answered step by step (orderings, sequences, counting, sorting, dates)
             (reasoning.py)

The word lists are data (words.toml). Document i of a source is a pure function of (generator
version, source name, category, language, programming language, seed, i) (dice.py), so any
document can be generated on its own, in any process, with identical bytes. Lengths are
log-normal: most documents are short, a few are long. reader.py is the API the build uses.
"""

from .dice import GENERATOR_VERSION
from .reader import (
    DEFAULT_SAMPLE_DOCUMENTS,
    SampleReader,
    rank_range,
    sample_documents,
    sample_fingerprint,
    sample_location,
    sample_reader,
)

__all__ = ["DEFAULT_SAMPLE_DOCUMENTS", "GENERATOR_VERSION", "SampleReader", "rank_range", "sample_documents",
           "sample_fingerprint", "sample_location", "sample_reader"]
