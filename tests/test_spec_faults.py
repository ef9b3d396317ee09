"""Fault injection: numbers that are not numbers, ranges that are not ranges, bytes that are not
text, and names that are not names. Each one is refused with one located line
(`file:line:column: error: key: message`), exit status 1 and no traceback, by every command that
reads it; nothing a user could mistake for a result is written.

The base project is spec_fixtures.py's; its line numbers are what the expected locations name.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from spec_fixtures import run_cli, write_project

from mixc.plan import epochs_at_token, normalize, plan_recipe
from mixc.project import load_plan
from mixc.report import render
from mixc.spec import load_recipe
from mixc.validate import validate_paths


def mix(old: str, new: str) -> dict:
    return {"mix.yaml": (old, new)}


def recipe(old: str, new: str) -> dict:
    return {"recipe.yaml": (old, new)}


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ": error: " in line]


def _one_located_error(result, file: str, line: int, column: int, key: str | None, message: str) -> None:
    out = result.output
    assert result.exit_code == 1, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    errors = _error_lines(out)
    assert len(errors) == 1, out
    key = f"{re.escape(key)}: " if key else ""
    pattern = rf"^{re.escape(file)}:{line}:{column}: error: {key}{message}"
    assert re.search(pattern, errors[0]), f"\n{errors[0]}\n does not match\n{pattern}"


HUGE_WEIGHTS = mix("  web-en: 0.6\n  web-fr: 0.2", "  web-en: 1e308\n  web-fr: 1e308")

# (id, edits, file, line, column, key, message regex): one broken number each.
NUMBERS = [
    ("weights-sum-overflows", HUGE_WEIGHTS, "mix.yaml", 3, 1, "sources", r"weights sum beyond the largest number"),
    ("eps-nan", recipe("phases:\n", "optimizer:\n  eps: .nan\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.eps",
     r"expected a finite number, got nan"),
    ("eps-negative", recipe("phases:\n", "optimizer:\n  eps: -1\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.eps",
     r"must be greater than 0, got -1"),
    ("eps-zero", recipe("phases:\n", "optimizer:\n  eps: 0\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.eps",
     r"must be greater than 0, got 0"),
    ("beta1-above-one", recipe("phases:\n", "optimizer:\n  beta1: 5\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.beta1",
     r"must be less than 1, got 5"),
    ("beta1-one", recipe("phases:\n", "optimizer:\n  beta1: 1.0\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.beta1",
     r"must be less than 1, got 1.0"),
    ("beta2-negative", recipe("phases:\n", "optimizer:\n  beta2: -1\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.beta2",
     r"must be greater than or equal to 0, got -1"),
    ("weight-decay-inf", recipe("phases:\n", "optimizer:\n  weight_decay: .inf\nphases:\n"), "recipe.yaml", 12, 3,
     "optimizer.weight_decay", r"expected a finite number, got inf"),
    ("grad-clip-nan", recipe("phases:\n", "optimizer:\n  grad_clip: .nan\nphases:\n"), "recipe.yaml", 12, 3,
     "optimizer.grad_clip", r"expected a finite number, got nan"),
    ("grad-clip-negative", recipe("phases:\n", "optimizer:\n  grad_clip: -1\nphases:\n"), "recipe.yaml", 12, 3,
     "optimizer.grad_clip", r"must be greater than or equal to 0"),
    ("z-loss-nan", recipe("phases:\n", "optimizer:\n  z_loss: .nan\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.z_loss",
     r"expected a finite number, got nan"),
    ("z-loss-negative", recipe("phases:\n", "optimizer:\n  z_loss: -0.1\nphases:\n"), "recipe.yaml", 12, 3, "optimizer.z_loss",
     r"must be greater than or equal to 0"),
    ("peak-lr-inf", recipe("peak_lr: 1.0e-3", "peak_lr: .inf"), "recipe.yaml", 7, 3, "schedule.peak_lr",
     r"expected a finite number, got inf"),
    ("peak-lr-nan", recipe("peak_lr: 1.0e-3", "peak_lr: .nan"), "recipe.yaml", 7, 3, "schedule.peak_lr",
     r"expected a finite number, got nan"),
    ("peak-lr-typo", recipe("peak_lr: 1.0e-3", "peak_lr: 3e4"), "recipe.yaml", 7, 3, "schedule.peak_lr",
     r"must be less than or equal to 10000(\.0)?, got 30000.0"),
    ("final-lr-nan", recipe("  decay_steps: 50\n", "  decay_steps: 50\n  final_lr: .nan\n"), "recipe.yaml", 11, 3,
     "schedule.final_lr", r"expected a finite number, got nan"),
    ("final-lr-negative", recipe("  decay_steps: 50\n", "  decay_steps: 50\n  final_lr: -1.0e-5\n"), "recipe.yaml", 11, 3,
     "schedule.final_lr", r"must be greater than or equal to 0"),
    ("rope-theta-inf", recipe("    rope_theta: 10000\n", "    rope_theta: .inf\n"), "recipe.yaml", 17, 5,
     "phases[0].rope_theta", r"expected a finite number, got inf"),
    ("rope-theta-zero", recipe("    rope_theta: 10000\n", "    rope_theta: 0\n"), "recipe.yaml", 17, 5,
     "phases[0].rope_theta", r"must be greater than 0, got 0"),
    ("epoch-warning-nan", recipe("model: m\n", "model: m\nepoch_warning: .nan\n"), "recipe.yaml", 4, 1, "epoch_warning",
     r"expected a finite number, got nan"),
    ("steps-1e30", recipe("    steps: 100\n", "    steps: 1e30\n"), "recipe.yaml", 15, 5, "phases[0].steps",
     r"1e\+30 is beyond mixc's limit of 1e\+15"),
    ("steps-1e400-text", recipe("    steps: 100\n", "    steps: '1e400'\n"), "recipe.yaml", 15, 5, "phases[0].steps",
     r"expected a finite count"),
    ("steps-huge-integer", recipe("    steps: 100\n", f"    steps: {10**40}\n"), "recipe.yaml", 15, 5, "phases[0].steps",
     r"about 10\^40 is beyond mixc's limit"),
    ("tokens-beyond-limit", recipe("    steps: 100\n", "    tokens: 2e15\n"), "recipe.yaml", 15, 5, "phases[0].tokens",
     r"2e\+15 is beyond mixc's limit of 1e\+15 \(a quadrillion\) for a count"),
    ("global-batch-beyond-limit", recipe("global_batch_tokens: 4096", "global_batch_tokens: 2e15"), "recipe.yaml", 4, 1,
     "global_batch_tokens", r"2e\+15 is beyond mixc's limit"),
    ("filter-empty-range", {"catalog.yaml": ("    tokens: 1000000\n", "    tokens: 1000000\n    filter: {min_chars: 500, max_chars: 100}\n")},
     "catalog.yaml", 6, 5, "sources.web-en.filter", r"min_chars \(500\) is above max_chars \(100\): no document would pass"),
    ("steps-times-batch-beyond-limit", recipe("    steps: 10\n", "    steps: 300000000000\n"), "recipe.yaml", 28, 5,
     "phases[2].steps", r"the curriculum reaches 1,228,800,000,819,200 tokens by this phase, beyond mixc's limit"),
    ("seed-negative", recipe("model: m\n", "model: m\nseed: -1\n"), "recipe.yaml", 4, 1, "seed",
     r"must be greater than or equal to 0"),
    ("catalog-size-beyond-limit", {"catalog.yaml": ("tokens: 1000000", "tokens: 1e16")}, "catalog.yaml", 5, 5,
     "sources.web-en.tokens", r"1e\+16 is beyond mixc's limit"),
]


@pytest.mark.parametrize("case", NUMBERS, ids=[c[0] for c in NUMBERS])
def test_a_bad_number_is_one_located_error(case, tmp_path):
    _, edits, file, line, column, key, message = case
    write_project(tmp_path, edits)
    target = "catalog.yaml" if file == "catalog.yaml" else "recipe.yaml"
    _one_located_error(run_cli(["validate", "--strict", target], cwd=tmp_path), file, line, column, key, message)


@pytest.mark.parametrize("case", [c for c in NUMBERS if c[0] in
                                  ("weights-sum-overflows", "peak-lr-inf", "rope-theta-inf", "steps-1e30", "eps-nan")],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("fmt", ["table", "json", "html", "png"])
def test_report_refuses_the_same_numbers(case, fmt, tmp_path):
    """The report used to crash (OverflowError) or draw a broken page (inf) on these."""
    _, edits, file, line, column, key, message = case
    write_project(tmp_path, edits)
    out = tmp_path / f"timeline.{fmt}"
    result = run_cli(["report", "recipe.yaml", "--format", fmt, *(["-o", str(out)] if fmt in ("html", "png") else [])],
                     cwd=tmp_path)
    _one_located_error(result, file, line, column, key, message)
    assert not out.exists()


def test_weights_near_the_largest_float_normalize_without_overflow(tmp_path):
    """Each weight finite and their sum finite: the shares come out exactly as for small weights."""
    write_project(tmp_path, mix("  web-en: 0.6\n  web-fr: 0.2", "  web-en: 1.2e308\n  web-fr: 4e307"))
    result = run_cli(["validate", "recipe.yaml"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert normalize([1e308, 1e308]) == [0.5, 0.5]  # the library function, fed an overflowing sum directly
    assert normalize([3.0, 1.0]) == [0.75, 0.25]


def test_folder_validation_reports_every_file_despite_a_fatal_one(tmp_path):
    """An overflowing mix and a binary file sit beside valid files: every file gets its line."""
    write_project(tmp_path, HUGE_WEIGHTS)
    good = tmp_path / "good"
    good.mkdir()
    write_project(good)
    (tmp_path / "zeros.yaml").write_bytes(b"\x00" * 64)
    result = run_cli(["validate", str(tmp_path)], cwd=tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name in ("catalog.yaml", "mix.yaml", "recipe.yaml"):
        assert f"OK {good / name}" in result.output
    assert f"OK {tmp_path / 'catalog.yaml'}" in result.output
    assert sorted(_error_lines(result.output)) == sorted([
        f"{tmp_path}/mix.yaml:3:1: error: sources: weights sum beyond the largest number (1.8e+308); scale them down",
        f"{tmp_path}/zeros.yaml:1:1: error: malformed YAML: control character U+0000 is not allowed in YAML text "
        "(a binary file, or a stray control character?)",
    ])
    assert "2 error(s) in 7 file(s)" in result.output


def test_an_unforeseen_arithmetic_failure_costs_only_its_own_file(tmp_path, monkeypatch):
    """Defence in depth: a number no check anticipated fails that file, located, and the rest run."""
    import mixc.validate

    write_project(tmp_path)

    def broken(resolved):
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(mixc.validate, "plan_recipe", broken)
    result = validate_paths([str(tmp_path)])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/recipe.yaml:1:1: error: cannot evaluate this file's numbers (OverflowError: int too large to convert to float)"]
    assert [line.split(":")[0] for line in result.lines] == [f"OK {tmp_path}/catalog.yaml", f"OK {tmp_path}/mix.yaml"]


@pytest.mark.parametrize("raw, line, column, char", [
    (b"\x00\x00\x00\x00", 1, 1, "0000"),
    (b"catalog: catalog.yaml\nsources:\n  web-en: 1\x00\n", 3, 12, "0000"),
    (b"sources:\n  web-en: \x07\n", 2, 11, "0007"),
])
def test_control_characters_are_a_located_error(raw, line, column, char, tmp_path):
    write_project(tmp_path, {"mix.yaml": raw})
    for args in (["validate", "mix.yaml"], ["report", "mix.yaml"]):
        result = run_cli(args, cwd=tmp_path)
        _one_located_error(result, "mix.yaml", line, column, None,  # no key: the file is not YAML at all
                           rf"malformed YAML: control character U\+{char} is not allowed")


def test_console_script_on_nul_bytes_and_overflowing_weights(tmp_path):
    """The real entry point, in a subprocess: the issue's two tracebacks are one line each now."""
    write_project(tmp_path, HUGE_WEIGHTS)
    (tmp_path / "nul.yaml").write_bytes(b"\x00" * 16)
    mixc = Path(sys.executable).parent / "mixc"
    for args in (["validate", "nul.yaml"], ["validate", "--strict", "mix.yaml"], ["report", "recipe.yaml"]):
        proc = subprocess.run([str(mixc) if mixc.exists() else "mixc", *args], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        errors = _error_lines(proc.stderr)
        assert len(errors) == 1 and re.match(r"^(nul|mix)\.yaml:\d+:\d+: error: ", errors[0]), proc.stderr


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "-inf", "four"])
@pytest.mark.parametrize("command", ["report", "plan"])
def test_epoch_warning_option_must_be_a_positive_finite_number(command, value, tmp_path):
    write_project(tmp_path)
    result = run_cli([command, "recipe.yaml", f"--epoch-warning={value}"], cwd=tmp_path)
    assert result.exit_code == 2, result.output  # a usage error, as for --tokens
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert errors == ["Error: Invalid value for '--epoch-warning': " + (
        f"expected a number of epochs such as 4, got '{value}'" if value == "four"
        else f"expected a finite number of epochs above 0, got '{value}'")]
    assert run_cli([command, "recipe.yaml", "--epoch-warning", "2.5"], cwd=tmp_path).exit_code == 0


# --------------------------------------------------------------------------- nanotron


def _nanotron_config() -> str:
    from test_nanotron import CONFIG

    return CONFIG


@pytest.mark.parametrize("old, new, line, column, key, message", [
    ("dp: 2", "dp: 0", 20, 15, "parallelism.dp", r"expected at least 1 data-parallel replica, got 0"),
    ("rope_theta: 10000.0", "rope_theta: -5.0", 21, 24, "model.model_config.rope_theta", r"expected a positive RoPE base"),
    ("seed: 3", "seed: -3", 1, 39, "general.seed", r"expected a seed in \[0, 2\^63\), got -3"),
    ("train_steps: 100", "train_steps: 1000000000000", 19, 88, "tokens.train_steps",
     r"1,000,000,000,000 steps of 4,096 tokens exceed mixc's limit"),
    ("    min_decay_lr: 0.0001\n", "    min_decay_lr: 0.0001\n  optimizer_factory: {adam_eps: -1}\n", 29, 23,
     "optimizer.optimizer_factory.adam_eps", r"must be greater than 0, got -1.0"),
    ("    min_decay_lr: 0.0001\n", "    min_decay_lr: 0.0001\n  optimizer_factory: {adam_beta2: 1.5}\n", 29, 23,
     "optimizer.optimizer_factory.adam_beta2", r"must be less than 1, got 1.5"),
    ("optimizer:\n", "optimizer:\n  clip_grad: .nan\n", 23, 3, "optimizer.clip_grad", r"expected a finite number, got nan$"),
    ("dataset_weights: [0.6,  0.3 ,", "dataset_weights: [1e308,  1e308 ,", 12, 7, "data_stages[0].data.dataset.dataset_weights",
     r"weights sum beyond the largest number"),
    ("min_decay_lr: 0.0001", "min_decay_lr: -1.0", 28, 5, "optimizer.learning_rate_scheduler.min_decay_lr",
     r"must be greater than or equal to 0, got -1.0"),
])
def test_nanotron_import_checks_its_input_and_writes_nothing(old, new, line, column, key, message, tmp_path):
    config = _nanotron_config()
    assert old in config
    (tmp_path / "bad.yaml").write_text(config.replace(old, new, 1))
    out = tmp_path / "out"
    result = run_cli(["import", "nanotron", "bad.yaml", "-o", str(out)], cwd=tmp_path)
    _one_located_error(result, "bad.yaml", line, column, key, message)
    assert "recipe.yaml" not in result.output  # located in the input, never in what would be written
    assert not out.exists()


def test_nanotron_import_that_cannot_validate_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    """Should the importer ever write a recipe that does not validate (a bug: read_config checks
    what it writes), it puts back what the folder held and adds nothing."""
    import mixc.interop.nanotron_import
    from mixc.locyaml import Location, SpecError

    def rejects(path):
        raise SpecError("simulated importer bug", Location(str(path), 1, 1))

    monkeypatch.setattr(mixc.interop.nanotron_import, "load_recipe", rejects)
    (tmp_path / "toy.yaml").write_text(_nanotron_config())
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.yaml").write_text("# an earlier import\n")
    result = run_cli(["import", "nanotron", "toy.yaml", "-o", str(out)], cwd=tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the imported recipe does not validate (nothing was written)" in result.output
    assert sorted(p.name for p in out.rglob("*")) == ["recipe.yaml"]  # no mixes/ folder either
    assert (out / "recipe.yaml").read_text() == "# an earlier import\n"
    monkeypatch.undo()
    assert run_cli(["import", "nanotron", "toy.yaml", "-o", str(out)], cwd=tmp_path).exit_code == 0
    assert (out / "recipe.yaml").read_text() != "# an earlier import\n" and any((out / "mixes").iterdir())


def test_largest_legal_numbers_still_render(tmp_path):
    """At the limits (a curriculum of 10^15 tokens, a RoPE base of 1e300, a learning rate of 100,
    weights of 1e-320 beside 1e308) every report format draws or prints, with no error."""
    big = """name: big
tokenizer: t
model: m
global_batch_tokens: 4096
schedule: {type: wsd, peak_lr: 10000, warmup_steps: 1000, decay_start_step: 200000000000, decay_steps: 44000000000}
phases:
  - {name: a, mix: mix.yaml, steps: 200000000000, sequence_length: 256, rope_theta: 1.0e300}
  - {name: b, mix: mix.yaml, steps: 44140000000, sequence_length: 256, rope_theta: 10000}
"""
    write_project(tmp_path, {"recipe.yaml": big, **mix("  web-en: 0.6\n  web-fr: 0.2", "  web-en: 1.0e-320\n  web-fr: 1.0e308")})
    assert run_cli(["validate", "--strict", "recipe.yaml"], cwd=tmp_path).exit_code == 0
    for fmt in ("table", "json", "markdown", "csv", "html", "png"):
        result = run_cli(["report", "recipe.yaml", "--format", fmt, "-o", f"big.{fmt}"], cwd=tmp_path)
        assert result.exit_code == 0 and "Traceback" not in result.output, (fmt, result.output)
        assert (tmp_path / f"big.{fmt}").stat().st_size > 0
    data = json.loads((tmp_path / "big.json").read_text())
    assert data["phases"][-1]["end_token"] == (200_000_000_000 + 44_140_000_000) * 4096 <= 10**15
    (tmp_path / "recipe.yaml").write_text(big.replace("44140000000", "44150000000"))
    _one_located_error(run_cli(["validate", "recipe.yaml"], cwd=tmp_path), "recipe.yaml", 8, 30, "phases[1].steps",
                       r"the curriculum reaches 1,000,038,400,000,000 tokens by this phase")


@pytest.mark.parametrize("vocab, message", [
    ("1", "--vocab-size 1: expected between 256 (a byte-level alphabet) and 4,294,967,296 (4-byte token ids)"),
    ("255", "--vocab-size 255: expected between 256"),
    ("5000000000", "--vocab-size 5000000000: expected between 256"),
])
def test_export_refuses_an_impossible_vocab_size(vocab, message, tmp_path):
    write_project(tmp_path)
    result = run_cli(["export", "nanotron", "recipe.yaml", "--vocab-size", vocab, "-o", "nt"], cwd=tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), errors
    assert not (tmp_path / "nt").exists()
    assert run_cli(["export", "nanotron", "recipe.yaml", "--vocab-size", "256", "-o", "nt"], cwd=tmp_path).exit_code == 0


def test_export_vocab_size_must_cover_the_stores_tokenizer(tmp_path):
    from store_fixtures import make_store

    write_project(tmp_path)
    resolved = load_recipe(tmp_path / "recipe.yaml")
    plan = plan_recipe(resolved)
    names = sorted({s.name for p in plan.phases for s in p.sources})
    rng = np.random.default_rng(0)
    docs = {n: [rng.integers(1, 50, 10) for _ in range(3)] for n in names}
    store = make_store(tmp_path, resolved.recipe.name, {p.name: {s.name: s.weight for s in p.sources} for p in plan.phases},
                       docs)  # a tokenizer of 1,000 ids: 2-byte shards

    def export(vocab: str):
        return run_cli(["export", "nanotron", "recipe.yaml", "--shards", str(store), "--vocab-size", vocab, "-o", "nt"],
                       cwd=tmp_path)

    result = export("999")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: --vocab-size 999 is smaller than the 1,000 ids of the tokenizer the shards in {store} were built with" \
        in result.output
    result = export("70000")
    assert result.exit_code == 1
    assert f"error: --vocab-size 70,000 means 4-byte token ids, but the shards in {store} hold 2-byte ids" in result.output
    assert not (tmp_path / "nt").exists()
    assert export("1024").exit_code == 0  # padded above the tokenizer, same bytes per id: fine


# --------------------------------------------------------------------------- the HTML page

HOSTILE = ["<!--<script>", "</script><b>x</b>", "a&amp;b<!--", "<script>alert(1)</script>", "]]></style>\u2028"]


class _Scripts(HTMLParser):
    """The page's <script> elements as an HTML parser splits them."""

    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data):
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._open = None


def hostile_plan(root: Path):
    """The fixture project's plan with its sources renamed to hostile strings, past any name rule
    the spec may have: the page must be safe whatever text reaches it."""
    write_project(root)
    plan = load_plan([str(root / "recipe.yaml")])
    rename = {s.name: HOSTILE[i] for i, s in enumerate(plan.phases[0].sources)}
    phases = []
    for p in plan.phases:
        sources = [replace(s, name=rename[s.name], source=s.source.model_copy(update={"name": rename[s.name]}))
                   for s in p.sources]
        phases.append(replace(p, sources=sources, mix_name=HOSTILE[0], name=p.name + HOSTILE[1]))
    return replace(plan, phases=phases, name=HOSTILE[0]), rename


def test_hostile_names_cannot_change_the_pages_script(tmp_path):
    plan, rename = hostile_plan(tmp_path)
    html = render(plan, "html")
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    assert [attrs for attrs, _ in parser.scripts] == [{"type": "application/json", "id": "timeline-data"}, {}]
    data_text, code = parser.scripts[0][1], parser.scripts[1][1]
    # Not one character that could move the HTML tokenizer out of plain script data.
    assert not set("<>&") & set(data_text)
    data = json.loads(data_text)
    assert [s["name"] for s in data["report"]["phases"][0]["sources"]] == list(rename.values())
    assert data["report"]["name"] == data["report"]["phases"][0]["mix"] == HOSTILE[0]
    assert data["report"]["phases"][0]["name"] == "a" + HOSTILE[1]
    from importlib import resources

    assert code.strip() == resources.files("mixc.report").joinpath("timeline.js").read_text(encoding="utf-8").strip()
    # Everything outside the scripts is escaped text too.
    assert "<!--<script>" not in html and "</script><b>" not in html


def test_epochs_at_the_start_list_the_first_phases_known_sizes(tmp_path):
    """At token 0 the panel has sizes to show (the first phase's sources of known size, at 0 epochs)."""
    write_project(tmp_path)
    plan = load_plan([str(tmp_path / "recipe.yaml")])
    assert epochs_at_token(plan, 0) == {"web-en": 0.0}  # the catalog gives web-en's size only
    second = plan.phases[1].start_token
    assert epochs_at_token(plan, second) == pytest.approx({"web-en": plan.phases[0].sources[0].tokens / 1_000_000})
