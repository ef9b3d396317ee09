"""datatrove readers that fail loudly, and the spec's length filter.

datatrove's readers are forgiving by design: a JSON line that does not parse, a file that is
not UTF-8, a missing text column all become a logged warning and skipped documents. For a
pretraining build a silently smaller source is worse than a stopped one, so these subclasses
raise a `MixcError` naming the source and the file (and line) instead. Valid input reads
exactly as datatrove reads it. Records with a null or empty text are skipped, as datatrove
does, but counted (`dropped_documents`) so the build summary and the manifest say so.
"""

from __future__ import annotations

import base64
import binascii

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from fsspec.utils import infer_compression

from ..errors import MixcError

# Documents at least this long carry their location (file and line) in their metadata, so
# the tokenizer step can name them if they cannot be encoded (see tokenize.split_document).
LOCATE_CHARS = 1 << 20

# Compressed files fsspec reads only with an optional package: without it, it would pass the
# compressed bytes through and the first line would be reported as "not UTF-8".
COMPRESSION_PACKAGES = {".zst": ("zstd", "zstandard"), ".zstd": ("zstd", "zstandard"), ".lz4": ("lz4", "lz4"),
                        ".sz": ("snappy", "python-snappy")}


class _Strict:
    """Mixed into a datatrove disk reader: the text column must exist and hold UTF-8 text."""

    source_name: str
    text_key: str
    dropped_documents: int = 0

    def _where(self, path: str) -> str:
        return self.data_folder.resolve_paths(path)

    def _fail(self, path: str, message: str) -> MixcError:
        return MixcError(f"source '{self.source_name}': {self._where(path)}: {message}")

    def _default_adapter(self, data: dict, path: str, id_in_file):
        if self.text_key not in data:
            columns = ", ".join(map(str, data)) or "none"
            raise self._fail(path, f"no text column '{self.text_key}' (found: {columns}); set text_column in the catalog")
        text = data[self.text_key]
        if isinstance(text, bytes):
            try:
                data[self.text_key] = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._fail(path, f"record {id_in_file}: column '{self.text_key}' holds non-UTF-8 bytes ({exc.reason} at byte {exc.start})") from None
        elif text is not None and not isinstance(text, str):
            raise self._fail(path, f"record {id_in_file}: column '{self.text_key}' holds {type(text).__name__}, not text")
        return super()._default_adapter(data, path, id_in_file)

    def _record_name(self, id_in_file) -> str:
        return f"record {id_in_file}"

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file):
        document = super().get_document_from_dict(data, source_file, id_in_file)
        if document is None:
            self.dropped_documents += 1
        elif len(document.text) >= LOCATE_CHARS:
            document.metadata["mixc_location"] = f"{self._where(source_file)}: {self._record_name(id_in_file)}"
        return document


class StrictJsonlReader(_Strict, JsonlReader):
    name = "🐿 Jsonl (strict)"

    def __init__(self, data_folder, *, source_name: str, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.source_name = source_name

    def _record_name(self, id_in_file) -> str:
        return f"line {int(id_in_file) + 1}"

    def _check_compression(self, filepath: str) -> None:
        for suffix, (codec, package) in COMPRESSION_PACKAGES.items():
            if filepath.endswith(suffix) and self.compression == "infer" and infer_compression(filepath) != codec:
                raise self._fail(filepath, f"reading {suffix} files needs the '{package}' package (pip install {package})")

    def _media(self, data: dict, filepath: str, line_no: int) -> None:
        media = data.get("media")
        if media is None:
            return
        if not isinstance(media, list) or not all(isinstance(m, dict) for m in media):
            raise self._fail(filepath, f"line {line_no}: 'media' must be a list of objects")
        for m in media:
            encoded = m.get("media_bytes")
            if encoded is None:
                continue
            try:
                m["media_bytes"] = base64.decodebytes(encoded.encode("ascii"))
            except (AttributeError, UnicodeEncodeError, binascii.Error) as exc:
                raise self._fail(filepath, f"line {line_no}: 'media_bytes' of a media entry is not base64 text ({exc})") from None

    def read_file(self, filepath: str) -> DocumentsPipeline:
        self._check_compression(filepath)
        line_no = 0
        try:
            # Binary lines, decoded here: a text-mode reader decodes ahead in blocks and would
            # blame the wrong line for a bad byte.
            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for line_no, line in enumerate(f, start=1):
                    with self.track_time():
                        try:
                            text = line.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise self._fail(filepath, f"line {line_no}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
                        if not text.strip():
                            continue
                        try:
                            data = orjson.loads(text)
                        except orjson.JSONDecodeError as exc:
                            raise self._fail(filepath, f"line {line_no}: not valid JSON ({exc})") from None
                        if not isinstance(data, dict):
                            raise self._fail(filepath, f"line {line_no}: expected a JSON object, got {type(data).__name__}")
                        self._media(data, filepath, line_no)
                        try:
                            document = self.get_document_from_dict(data, filepath, line_no - 1)
                        except (TypeError, KeyError, ValueError) as exc:  # e.g. a media entry with unknown fields
                            raise self._fail(filepath, f"line {line_no}: not a document ({type(exc).__name__}: {exc})") from None
                    if document:
                        yield document
        except MixcError:
            raise
        except (OSError, EOFError, ValueError) as exc:
            raise self._fail(filepath, f"cannot read after line {line_no} ({type(exc).__name__}: {exc})") from None


class StrictParquetReader(_Strict, ParquetReader):
    name = "📒 Parquet (strict)"

    def __init__(self, data_folder, *, source_name: str, **kwargs):
        super().__init__(data_folder, read_metadata=False, **kwargs)
        self.source_name = source_name

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow as pa  # heavy: only for parquet sources
        import pyarrow.parquet as pq  # (the same)

        try:
            with self.data_folder.open(filepath, "rb") as f, pq.ParquetFile(f) as pqf:
                names = pqf.schema_arrow.names
                if self.text_key not in names:
                    raise self._fail(filepath, f"no text column '{self.text_key}' (found: {', '.join(names)}); set text_column in the catalog")
                yield from super().read_file(filepath)
        except MixcError:
            raise
        except (pa.ArrowException, OSError, EOFError, ValueError) as exc:
            raise self._fail(filepath, f"not a readable parquet file ({type(exc).__name__}: {exc})") from None


class LengthFilter(PipelineStep):
    """The spec's `filter:` — keep documents whose length in characters is within bounds."""

    name = "📏 Length"
    type = "🔻 - FILTER"

    def __init__(self, min_chars: int | None = None, max_chars: int | None = None):
        super().__init__()
        self.min_chars = min_chars
        self.max_chars = max_chars

    def keep(self, doc: Document) -> bool:
        n = len(doc.text)
        return (self.min_chars is None or n >= self.min_chars) and (self.max_chars is None or n <= self.max_chars)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            if self.keep(doc):
                self.stat_update("kept")
                yield doc
            else:
                self.stat_update("dropped")
