"""The spec pass as a library: YAML with positions, counts, languages, file kinds, resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_fixtures import REPO, write_project

from mixc.errors import MixcError
from mixc.locyaml import Location, SpecError, SpecErrors, load_text
from mixc.spec import (
    check_language,
    detect_kind,
    key_path,
    load_catalog,
    load_mix,
    load_recipe,
    parse_count,
    relative_to_file,
)

# --------------------------------------------------------------------------- YAML with positions


def test_positions_of_keys_and_items():
    located = load_text("a: 1\nb:\n  c: [x, y]\n  d:\n    - e: 2\n", "f.yaml")
    assert located.data == {"a": 1, "b": {"c": ["x", "y"], "d": [{"e": 2}]}}
    assert located.where(("a",)) == Location("f.yaml", 1, 1)
    assert located.where(("b", "c")) == Location("f.yaml", 3, 3)
    assert located.where(("b", "c", 1)) == Location("f.yaml", 3, 10)
    assert located.where(("b", "d", 0, "e")) == Location("f.yaml", 5, 7)
    # An unknown path points at its nearest known ancestor; str() is what editors parse.
    assert str(located.where(("b", "d", 0, "missing"))) == "f.yaml:5:7"
    assert located.where(("zzz",)) == Location("f.yaml", 1, 1)


def test_yaml_12_floats_and_merge_keys():
    located = load_text("w: 5e-05\nx: 1.0e-8\ny: '5e-05'\nbase: &b {p: 1}\nz:\n  <<: *b\n  q: 2\n", "f.yaml")
    assert located.data["w"] == 5e-05 and isinstance(located.data["w"], float)
    assert located.data["x"] == 1e-8
    assert located.data["y"] == "5e-05"  # quoted stays a string
    assert located.data["z"] == {"p": 1, "q": 2}


def test_duplicate_key_error_object():
    with pytest.raises(SpecError) as info:
        load_text("sources:\n  a: 1\n  b: 2\n  a: 3\n", "m.yaml")
    err = info.value
    assert (err.location.line, err.location.column, err.key) == (4, 3, "sources.a")
    assert str(err) == "m.yaml:4:3: error: sources.a: duplicate key 'a' (first defined at line 2)"
    assert isinstance(err, MixcError)


def test_alias_bombs_are_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 8)]
    with pytest.raises(SpecError, match="expands to more than"):
        load_text("\n".join(lines) + "\n", "bomb.yaml")


def test_several_errors_in_one_pass(tmp_path):
    write_project(tmp_path, {"mix.yaml": ("  web-fr: 0.2\n  code-py: 0.15", "  web-fr: -0.2\n  code-py: .nan")})
    with pytest.raises(SpecErrors) as info:
        load_mix(tmp_path / "mix.yaml")
    assert [(e.location.line, e.key) for e in info.value.errors] == [(5, "sources.web-fr"), (6, "sources.code-py")]
    assert str(info.value).count("\n") == 1


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("text, value", [
    (1000, 1000), ("1_000", 1000), ("1,000", 1000), (2.5e9, 2_500_000_000), ("2.5e9", 2_500_000_000),
    ("8.14T", 8_140_000_000_000), ("47B", 47_000_000_000), ("1.5k", 1500), ("3M", 3_000_000), (" 12 ", 12),
])
def test_counts(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["8.1X", "-5", "T", "2.5", 2.5, True, float("inf"), float("nan"), "1e3e3"])
def test_bad_counts(text):
    with pytest.raises(ValueError):
        parse_count(text)


def test_languages():
    assert check_language("fra_Latn") == "fra_Latn"
    assert check_language("cmn_Hani") == "cmn_Hani"
    for bad, why in [("fr", "not ISO 639-3 plus script"), ("fra_latn", "not ISO 639-3 plus script"),
                     ("qqq_Latn", "unknown ISO 639-3 language"), ("fra_Abcd", "unknown ISO 15924 script")]:
        with pytest.raises(ValueError, match=why):
            check_language(bad)


def test_key_path():
    assert key_path(("phases", 2, "schedule", "type")) == "phases[2].schedule.type"
    assert key_path(("sources", "web-en")) == "sources.web-en"
    assert key_path(()) == ""


# --------------------------------------------------------------------------- files


def test_detect_kind(tmp_path):
    write_project(tmp_path)
    assert [detect_kind(tmp_path / f) for f in ("catalog.yaml", "mix.yaml", "recipe.yaml")] == ["catalog", "mix", "recipe"]
    inline = tmp_path / "inline.yaml"
    inline.write_text("sources:\n  a: {weight: 1, category: web, path: x}\n")
    assert detect_kind(inline) == "mix"
    bare = tmp_path / "bare.yaml"
    bare.write_text("sources:\n  a: 0.5\n  b: 0.5\n")
    assert detect_kind(bare) == "mix"


def test_shipped_kinds():
    assert detect_kind(REPO / "mixes/smollm3/sources.yaml") == "catalog"
    assert detect_kind(REPO / "mixes/smollm3/stage3.yaml") == "mix"
    assert detect_kind(REPO / "recipes/smollm3-3b.yaml") == "recipe"


def test_relative_paths():
    assert relative_to_file("recipes/r.yaml", "../mixes/smollm3/stage1.yaml") == Path("mixes/smollm3/stage1.yaml")
    assert relative_to_file("/a/b/m.yaml", "sources.yaml") == Path("/a/b/sources.yaml")


def test_catalog_sources(tmp_path):
    write_project(tmp_path)
    sources, located = load_catalog(tmp_path / "catalog.yaml")
    assert list(sources) == ["web-en", "web-fr", "code-py", "math-a"]
    en, fr, code = sources["web-en"], sources["web-fr"], sources["code-py"]
    assert (en.language, en.format, en.split, en.text_column, en.tokens, en.verified) == ("eng_Latn", "parquet", "train", "text", 1_000_000, True)
    assert not en.multilingual and fr.multilingual
    assert code.url == "hf://datasets/bigcode/the-stack" and en.url == "sample://web-en"
    assert located.where(("sources", "code-py")).line == 10


def test_non_web_in_another_language_is_not_multilingual(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("sources:\n  c:\n    weight: 1\n    category: code\n    language: fra_Latn\n    path: x\n")
    ((source, _),) = load_mix(path).entries
    assert not source.multilingual


def test_recipe_resolves_each_phase_mix(tmp_path):
    write_project(tmp_path)
    resolved = load_recipe(tmp_path / "recipe.yaml")
    assert [m.name for m in resolved.mixes] == ["mix", "mix", "mix"]
    assert resolved.recipe.phases[2].schedule.type == "cosine"
    assert resolved.positions["b"].line == 18
    assert resolved.recipe.optimizer.beta2 == 0.95  # defaults fill what the recipe leaves out


def test_shipped_recipes_load():
    big = load_recipe(REPO / "recipes/smollm3-3b.yaml").recipe
    assert big.global_batch_tokens == 2_359_296 and big.schedule.type == "wsd"
    assert [p.stage for p in big.phases] == [1, 2, 3, None, None]
    assert [p.rope_theta for p in big.phases] == [50_000, 50_000, 50_000, 2_000_000, 5_000_000]
    tiny = load_recipe(REPO / "recipes/smollm3-tiny.yaml").recipe
    assert [p.name for p in tiny.phases] == [p.name for p in big.phases]
    assert tiny.global_batch_tokens < 10**5


def test_relative_source_paths_are_relative_to_the_file_that_says_them(tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "sources.yaml").write_text(
        "sources:\n"
        "  local: {category: web, format: jsonl, path: data/local}\n"
        "  remote: {category: web, path: 'hf://datasets/org/name'}\n"
        "  absolute: {category: web, path: /srv/corpus}\n")
    (spec_dir / "mix.yaml").write_text(
        "name: m\ncatalog: sources.yaml\nweights: relative\n"
        "sources:\n  local: 1\n  remote: 1\n  absolute: 1\n"
        "  inline: {weight: 1, category: code, format: jsonl, path: ../code}\n")
    monkeypatch.chdir(tmp_path.parent)  # somewhere else entirely
    sources, _ = load_catalog(spec_dir / "sources.yaml")
    assert sources["local"].path == str(spec_dir / "data" / "local")
    assert sources["remote"].path == "hf://datasets/org/name" and sources["absolute"].path == "/srv/corpus"
    mix = load_mix(spec_dir / "mix.yaml")
    paths = {s.name: s.path for s, _ in mix.entries}
    assert paths["local"] == str(spec_dir / "data" / "local") and paths["inline"] == str(tmp_path / "code")
