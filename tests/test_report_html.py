"""The HTML curriculum timeline (checked in a real Chromium) and the PNG charts."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest
from spec_fixtures import REPO, run_cli, write_project
from test_eval import store, trained  # noqa: F401  (the held-out tests' tiny store and its 4-step run)

from mixc.errors import MixcError
from mixc.plan import epochs_at_token, lr_at_token
from mixc.project import load_plan
from mixc.report import render
from mixc.report.curves import run_curves
from mixc.report.data import plan_data
from mixc.report.ledger import run_plan, run_records

RECIPE = REPO / "recipes" / "smollm3-3b.yaml"
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _embedded(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="timeline-data">(.*?)</script>', html, re.S)
    assert m, "the page embeds its data"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def plan():
    return load_plan([str(RECIPE)])


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timeline") / "smollm3-3b.html"
    result = run_cli(["report", str(RECIPE), "--format", "html", "-o", str(out)], cwd=REPO)
    assert result.exit_code == 0, result.output
    return out


def test_page_is_one_self_contained_deterministic_file(page_file, plan):
    html = page_file.read_text(encoding="utf-8")
    assert html == render(plan, "html"), "same plan, same bytes"
    # Nothing is fetched: no external scripts, styles, images or fonts.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert not re.search(r"url\(|@import", html)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace name, not a request
    # The embedded data is the JSON report itself, plus the x-axis segments of the runs.
    data = _embedded(html)
    assert data["report"] == json.loads(json.dumps(plan_data(plan)))
    assert [r["name"] for r in data["runs"]] == ["main", "long-context-32k", "long-context-64k"]
    assert data["runs"][0]["end_token"] == 4_720_000 * 2_359_296  # pretraining ends at 11.14T
    assert data["runs"][0]["x0"] == 0 and data["runs"][-1]["x1"] == 1
    # The two long-context runs (under 1% of tokens) still get a scrubbable share of the axis.
    assert [round(r["x1"] - r["x0"], 9) for r in data["runs"][1:]] == [0.08, 0.08]
    # A phase-to-phase diff for each consecutive pair, with its real numbers.
    assert html.count('<details class="diff"') == 4
    assert "stable-1 → stable-2" in html and "×3.36" in html  # math rises 2.7% -> 9.1%


def test_a_mix_name_cannot_break_out_of_the_page(tmp_path):
    # Source names are restricted to a safe character set (a located error otherwise); a mix's
    # free-text name is not, and is escaped.
    write_project(tmp_path, {"mix.yaml": ("weights: relative", "weights: relative\nname: '</script><b>x</b>'")})
    result = run_cli(["report", "recipe.yaml", "--format", "html", "-o", "t.html"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    html = (tmp_path / "t.html").read_text()
    assert "</script><b>" not in html
    assert _embedded(html)["report"]["phases"][0]["mix"] == "</script><b>x</b>"


def test_timeline_needs_a_recipe(tmp_path):
    write_project(tmp_path)
    for fmt in ("html", "png"):
        result = run_cli(["report", "mix.yaml", "--format", fmt, "-o", f"out.{fmt}"], cwd=tmp_path)
        assert result.exit_code == 1
        assert "needs a recipe" in result.output and "Traceback" not in result.output
        assert not (tmp_path / f"out.{fmt}").exists()


def test_png_has_the_same_charts_as_a_valid_deterministic_image(tmp_path, plan):
    out = tmp_path / "timeline.png"
    result = run_cli(["report", str(RECIPE), "--format", "png", "-o", str(out)], cwd=REPO)
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 1200 and height >= 900
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.1  # drawn, not blank
    again = tmp_path / "again.png"
    render(plan, "png", str(again))
    assert again.read_bytes() == raw


# --------------------------------------------------------------------------- a run's timeline


def _handwritten_metrics(plan) -> list[dict]:
    """metrics.jsonl lines of a SmolLM3 run: evaluations in stable-1 (step 3) and in the decay."""
    decay = plan.phases[2]
    ev = {"categories": {"code": {"loss": 1.4, "bpb": 2.0}, "web": {"loss": 1.0, "bpb": 1.5}}, "mix": {"bpb": 1.75}}
    late = {"categories": {"math": {"loss": 0.9, "bpb": 1.25}, "web": {"loss": 0.8, "bpb": 1.125}}, "mix": None}
    return [
        {"step": 1, "phase": "stable-1", "phase_index": 0, "run": "main", "run_step": 1, "loss": 10.5},
        {"step": 2, "phase": "stable-1", "phase_index": 0, "run": "main", "run_step": 2, "loss": None, "skipped": "nan"},
        {"step": 3, "phase": "stable-1", "phase_index": 0, "run": "main", "run_step": 3, "loss": 9.0, "eval": ev},
        {"step": 1, "phase": "stable-1", "phase_index": 0, "run": "main", "run_step": 1, "loss": 10.25},  # the later line wins
        {"step": 4_198_005, "phase": "decay", "phase_index": 2, "run": "main", "run_step": decay.first_step + 4,
         "loss": 3.25, "eval": late},
    ]


def test_run_curves_put_each_step_at_the_plan_token_where_it_ends(plan, tmp_path):
    gbs = plan.phases[0].global_batch_tokens
    decay = plan.phases[2]
    lines = _handwritten_metrics(plan)
    run = tmp_path / "run"
    run.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in lines)
    (run / "metrics.jsonl").write_text(text + '{"step": 4198006, "pha')  # a line torn by a kill
    curves = run_curves(plan, run_records(run), run)
    decay_end = decay.start_token + 5 * gbs
    assert curves["loss"] == {"step": [1, 3, 4_198_005], "token": [gbs, 3 * gbs, decay_end], "value": [10.25, 9.0, 3.25]}
    assert curves["heldout"] == {"step": [3, 4_198_005], "token": [3 * gbs, decay_end], "mix": [1.75, None],
                                 "categories": {"web": [1.5, 1.125], "code": [2.0, None], "math": [None, 1.25]}}
    assert (curves["steps_done"], curves["total_steps"]) == (4_198_005, sum(p.steps for p in plan.phases))
    # The page embeds exactly these columns, escaped as the rest of its data.
    assert _embedded(render(plan, "html", run=curves))["run"] == json.loads(json.dumps(curves))
    # A step recorded in another phase than the plan's: the recipe changed since the run.
    lines[-1]["phase"] = "stable-2"
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(MixcError, match=r"metrics.jsonl: step 4198005 was trained in phase 'stable-2'.*recipe was changed"):
        run_curves(plan, run_records(run), run)


@pytest.fixture(scope="module")
def run_page(trained, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("runpage") / "run.html"
    result = run_cli(["report", str(trained), "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_of_a_run_draws_its_loss_and_heldout_bpb_on_its_curriculum(trained, run_page, tmp_path):  # noqa: F811
    _, _, plan = run_plan(trained)
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    html = run_page.read_text(encoding="utf-8")
    assert html == render(plan, "html", run=run_curves(plan, run_records(trained), trained)), "same run, same bytes"
    data = _embedded(html)
    assert data["report"] == json.loads(json.dumps(plan_data(plan)))  # the run's plan: store sizes, its recipe
    run = data["run"]
    gbs = plan.phases[0].global_batch_tokens
    assert run["loss"] == {"step": [1, 2, 3, 4], "token": [gbs, 2 * gbs, 3 * gbs, 4 * gbs],
                           "value": [r["loss"] for r in records]}
    evals = [r for r in records if r.get("eval")]
    assert run["heldout"]["step"] == [r["step"] for r in evals] and {2, 4} <= set(run["heldout"]["step"])
    assert run["heldout"]["token"] == [r["step"] * gbs for r in evals]
    assert run["heldout"]["mix"] == [r["eval"]["mix"]["bpb"] for r in evals]
    assert run["heldout"]["categories"] == {c: [r["eval"]["categories"][c]["bpb"] for r in evals] for c in ("web", "code", "math")}
    assert (run["steps_done"], run["total_steps"], run["path"]) == (4, 4, str(trained))
    # table and json stay the ledger; html and png need a file; the recipe-only formats are refused.
    assert json.loads(run_cli(["report", str(trained), "--format", "json"]).output)["steps_done"] == 4
    png = tmp_path / "run.png"
    assert run_cli(["report", str(trained), "--format", "png", "-o", str(png)]).exit_code == 0
    render(plan, "png", str(tmp_path / "plan.png"))
    heights = [struct.unpack(">II", f.read_bytes()[16:24])[1] for f in (png, tmp_path / "plan.png")]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and heights[0] > heights[1]  # the loss and bpb panels
    for args, message in ((["--format", "html"], "needs -o FILE"), (["--format", "markdown"], "table, json, html or png")):
        result = run_cli(["report", str(trained), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    # A run whose recipe is not where run.json says (a relative path, read from elsewhere): located, nothing written.
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "run.json").write_text(json.dumps({**json.loads((trained / "run.json").read_text()), "recipe": "recipes/r.yaml"}))
    result = run_cli(["report", str(moved), "--format", "html", "-o", str(tmp_path / "moved.html")], cwd=tmp_path)
    assert result.exit_code == 1 and "run.json: the run's recipe 'recipes/r.yaml' is not there" in result.output
    assert not (tmp_path / "moved.html").exists()


# --------------------------------------------------------------------------- in Chromium


def _chromium() -> str | None:
    for path in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if path and Path(path).exists():
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium not found (Debian package 'chromium'; .ci/run installs it): the timeline's browser test cannot run")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def drag_slider(page, value) -> None:
    """Move the scrub slider as a drag does: set its value, then fire its input event."""
    page.evaluate("(v) => { const s = document.getElementById('slider'); s.value = String(v);"
                  " s.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def close_checked(page, screenshot: str, errors: list, requests: list) -> None:
    """Keep a screenshot in artifacts/, then check that the page raised nothing and loaded only
    its own file (no network), and close it."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    assert not errors, errors
    assert requests and all(url.startswith("file://") for url in requests), requests
    page.close()


def _shown(page) -> dict:
    """Everything the page displays at its cursor, read back from the DOM."""
    return page.evaluate("""() => {
        const a = (id, k) => document.getElementById(id).getAttribute(k);
        const rows = (sel, k) => Object.fromEntries([...document.querySelectorAll(sel)].map(
            (r) => [r.getAttribute(k[0]), Number(r.getAttribute(k[1]))]));
        return {
            token: Number(a("cur-token", "data-token")), phase: a("cur-phase", "data-phase"),
            step: Number(a("cur-step", "data-step")), lr: Number(a("cur-lr", "data-lr")),
            lrText: document.getElementById("cur-lr").textContent,
            seq: Number(a("cur-seq", "data-seq")), rope: Number(a("cur-rope", "data-rope")),
            categories: rows("#cur-categories li", ["data-category", "data-share"]),
            bar: rows("#cur-mixbar div", ["data-category", "data-share"]),
            top: rows("#cur-top tbody tr", ["data-source", "data-share"]),
            epochs: rows("#cur-epochs tbody tr", ["data-source", "data-epochs"]),
            epochsNote: document.getElementById("epochs-note").textContent,
            openDiffs: [...document.querySelectorAll("details.diff[open]")].map((d) => d.id),
            active: document.activeElement.id,
        };
    }""")


def _check_against_report(shown: dict, plan, data: dict) -> None:
    token = shown["token"]
    assert token == int(token) and 0 <= token <= plan.total_tokens
    phase = plan.at_token(token)
    expected = data["phases"][phase.index]
    assert shown["phase"] == phase.name
    assert shown["step"] == min(phase.first_step + (token - phase.start_token) // phase.global_batch_tokens, phase.last_step)
    assert shown["lr"] == lr_at_token(plan, token), (token, shown["lr"])
    assert shown["seq"] == expected["sequence_length"] and shown["rope"] == expected["rope_theta"]
    assert shown["categories"] == expected["categories"] | {}
    assert set(shown["categories"]) == {"web", "multilingual", "code", "math", "reasoning"}
    assert shown["bar"]["multilingual"] == expected["categories"]["multilingual"]
    assert sum(shown["bar"].values()) == pytest.approx(1.0, abs=1e-9)
    shares = {s["name"]: s["share"] for s in expected["sources"]}
    top = dict(shown["top"])
    other = top.pop("(other)", 0.0)
    assert len(top) == min(10, len(shares)) and all(shares[name] == share for name, share in top.items())
    assert min(top.values()) >= max((v for k, v in shares.items() if k not in top), default=0)
    assert other == pytest.approx(1.0 - sum(top.values()), abs=1e-9)
    expected_epochs = epochs_at_token(plan, token)
    assert set(shown["epochs"]) == set(expected_epochs)
    for name, epochs in expected_epochs.items():
        assert shown["epochs"][name] == pytest.approx(epochs, rel=1e-12)


@pytest.mark.browser
def test_scrubbing_the_timeline_shows_the_reports_numbers(browser, page_file, plan):
    data = plan_data(plan)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(page_file.as_uri())
    page.wait_for_selector('#app[data-ready="1"]', timeout=10_000)
    assert page.locator("#overview").text_content().count("end of pretraining · 11.14T") == 1
    assert page.locator("#run-section").is_hidden()  # a recipe's page has no run to show

    starts = [p.start_token for p in plan.phases]
    page.keyboard.press("Tab")  # the slider is the first thing the keyboard reaches
    seen = []

    def at(expect_token=None):
        shown = _shown(page)
        assert shown["active"] == "slider"
        if expect_token is not None:
            assert shown["token"] == expect_token
        _check_against_report(shown, plan, data)
        seen.append(shown)
        return shown

    shown = at(0)  # the start: stable-1, first warmup step
    assert shown["phase"] == "stable-1" and shown["lr"] == 2e-4 / 2000 and shown["lrText"] == "1.000e−7"
    # Sizes are known from the start: stable-1's sources of known size, at 0 epochs so far.
    assert shown["epochs"] and set(shown["epochs"].values()) == {0.0}
    assert shown["epochsNote"].startswith(f"Cumulative epochs of the {len(shown['epochs'])} sources trained so far")
    page.keyboard.press("ArrowRight")
    at()
    page.keyboard.press("2")  # jump to phase 2
    assert at(starts[1])["phase"] == "stable-2"
    page.keyboard.press("PageDown")  # next phase: the decay, where the LR starts to fall
    shown = at(starts[2])
    assert shown["phase"] == "decay" and shown["step"] == 4_198_001 and shown["openDiffs"] == ["diff-2"]
    for _ in range(5):
        page.keyboard.press("Shift+ArrowRight")
    shown = at()
    assert shown["phase"] == "decay" and 0 < shown["lr"] < 2e-4
    page.keyboard.press("PageDown")  # past the end of pretraining: the 32k run restarts its steps
    shown = at(starts[3])
    assert (shown["phase"], shown["step"], shown["seq"], shown["rope"]) == ("long-context-32k", 1, 32768, 2_000_000)
    page.keyboard.press("End")
    shown = at(plan.total_tokens)
    assert shown["phase"] == "long-context-64k" and shown["lr"] == 0.0
    page.keyboard.press("PageUp")
    assert at(starts[4])["phase"] == "long-context-64k"
    page.keyboard.press("Home")
    at(0)

    # Dragging the slider: set a position and fire the input event, as the browser does.
    for position in (1234, 5000, 7777, 8100, 8365, 8800, 9123, 9650, 9999):
        drag_slider(page, position)
        at()
    assert {s["phase"] for s in seen} == {p.name for p in plan.phases}
    assert any(s["epochs"] for s in seen)  # some sources have known sizes in the catalog

    page.keyboard.press("3")
    page.evaluate("window.scrollTo(0, 0)")
    close_checked(page, "timeline-smollm3-3b.png", errors, requests)


@pytest.mark.browser
def test_hostile_names_leave_the_page_working(browser, tmp_path):
    """Names that open HTML comments or script tags are shown as text, and the page still runs."""
    from test_spec_faults import HOSTILE, hostile_plan

    plan, rename = hostile_plan(tmp_path)
    page_file = tmp_path / "hostile.html"
    page_file.write_text(render(plan, "html"), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(page_file.as_uri())
    page.wait_for_selector('#app[data-ready="1"]', timeout=10_000)
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert page.locator("h1").text_content().startswith(HOSTILE[0])
    shown = _shown(page)
    assert set(dict(shown["top"])) == set(rename.values())  # every source of the first phase, by its hostile name
    cells = page.evaluate("[...document.querySelectorAll('#cur-top tbody tr td:first-child')].map((td) => td.textContent)")
    assert set(cells) == set(rename.values())
    assert shown["epochs"] == {HOSTILE[0]: 0.0}  # the renamed web-en has a size in the catalog
    assert shown["phase"] == "a" + HOSTILE[1]
    assert not errors, errors
    page.close()


def _run_shown(page) -> dict:
    """The run's readout at the cursor, read back from the DOM."""
    return page.evaluate("""() => {
        const a = (id, k) => document.getElementById(id).getAttribute(k);
        const num = (v) => (v === "" || v === null ? null : Number(v));
        return {
            token: Number(a("cur-token", "data-token")), step: Number(a("cur-step", "data-step")),
            loss: num(a("cur-loss", "data-loss")), lossStep: num(a("cur-loss", "data-step")),
            lossText: document.getElementById("cur-loss").textContent,
            bpb: num(a("cur-bpb", "data-bpb")), bpbStep: num(a("cur-bpb", "data-step")),
            bpbText: document.getElementById("cur-bpb").textContent,
            categories: Object.fromEntries([...document.querySelectorAll("#cur-bpb-categories li")].map(
                (li) => [li.getAttribute("data-category"), [num(li.getAttribute("data-bpb")), li.querySelector(".share").textContent]])),
            deltas: Object.fromEntries([...document.querySelectorAll("#cur-bpb-categories li")].map(
                (li) => [li.getAttribute("data-category"), num(li.getAttribute("data-delta"))])),
        };
    }""")


@pytest.mark.browser
def test_scrubbing_a_runs_timeline_shows_its_loss_and_heldout_bpb(browser, trained, run_page):  # noqa: F811
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    _, _, plan = run_plan(trained)
    gbs = plan.phases[0].global_batch_tokens
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(run_page.as_uri())
    page.wait_for_selector('#app[data-ready="1"]', timeout=10_000)
    assert page.locator("#run-section").is_visible()
    assert page.locator("#loss-chart polyline.loss-line").count() == 1
    assert page.locator("#bpb-chart polyline.bpb-line").count() == 4  # web, code, math and the mix

    def check(expect_token: int) -> dict:
        """The readout against metrics.jsonl: the last step finished, and the last evaluation, by the cursor."""
        shown = _run_shown(page)
        assert shown["token"] == expect_token
        done = [r for r in records if r["step"] * gbs <= expect_token]
        if done:
            assert (shown["loss"], shown["lossStep"]) == (done[-1]["loss"], done[-1]["step"])
            assert shown["lossText"] == f"{done[-1]['loss']:.4f}"
        else:
            assert (shown["loss"], shown["lossText"]) == (None, "–")
        evals = [r for r in done if r.get("eval")]
        if evals:
            ev = evals[-1]["eval"]
            assert (shown["bpb"], shown["bpbStep"], shown["bpbText"]) == (ev["mix"]["bpb"], evals[-1]["step"], f"{ev['mix']['bpb']:.4f}")
            assert shown["categories"] == {c: [v["bpb"], f"{v['bpb']:.4f}"] for c, v in ev["categories"].items()}
            # Beside each, the change over the phase of that evaluation's step, from the phase's
            # start as the ledger has it (its heldout_start).
            start = [r for r in evals if r["step"] * gbs <= plan.phases[evals[-1]["phase_index"]].start_token] or evals[:1]
            since = None if start[-1] is evals[-1] else start[-1]["eval"]
            assert shown["deltas"] == {c: None if since is None else v["bpb"] - since["categories"][c]["bpb"]
                                       for c, v in ev["categories"].items()}
        else:
            assert shown["bpb"] is None and shown["categories"] == {c: [None, "–"] for c in ("web", "code", "math")}
        return shown

    page.keyboard.press("Tab")
    check(0)  # nothing trained yet
    # Dragging the slider to a quarter: one step of four done, no evaluation yet (the first is at phase one's end).
    drag_slider(page, 2600)
    assert check(gbs)["step"] == 2  # the cursor is on step 2; the loss shown is step 1's, the one finished
    page.keyboard.press("2")  # phase two starts where phase one's last step and its evaluation ended
    assert check(plan.phases[1].start_token)["bpbStep"] == 2
    drag_slider(page, 7600)
    shown = check(3 * gbs)  # step 3's loss, and still phase one's last evaluation (step 2)
    assert (shown["lossStep"], shown["bpbStep"]) == (3, 2)
    page.keyboard.press("End")
    shown = check(plan.total_tokens)
    assert shown["lossStep"] == 4 and shown["bpbStep"] == 4 and None not in shown["deltas"].values()
    close_checked(page, "timeline-run.png", errors, requests)


@pytest.mark.browser
def test_the_bpb_change_is_over_the_phase_the_evaluation_measured(browser, plan, tmp_path):
    """At the start of a phase the latest evaluation is the previous phase's end: its change is that phase's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _handwritten_metrics(plan)))
    page_file = tmp_path / "run.html"
    page_file.write_text(render(plan, "html", run=run_curves(plan, run_records(run), run)), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    page.wait_for_selector('#app[data-ready="1"]', timeout=10_000)
    page.keyboard.press("Tab")
    page.keyboard.press("3")  # the decay's start: the latest evaluation (step 3) is stable-1's first, nothing to compare
    shown = _run_shown(page)
    assert (shown["lossStep"], shown["loss"], shown["bpbStep"], shown["bpb"]) == (3, 9.0, 3, 1.75)
    assert shown["deltas"] == {"web": None, "code": None, "math": None}
    assert shown["categories"] == {"web": [1.5, "1.5000"], "code": [2.0, "2.0000"], "math": [None, "–"]}
    page.keyboard.press("4")  # the first long-context phase: the decay's evaluation, against the decay's start (step 3)
    shown = _run_shown(page)
    assert (shown["token"], shown["lossStep"], shown["bpbStep"], shown["bpb"], shown["bpbText"]) == (
        plan.phases[3].start_token, 4_198_005, 4_198_005, None, "–")
    assert shown["deltas"] == {"web": 1.125 - 1.5, "code": None, "math": None}
    assert page.locator('#cur-bpb-categories li[data-category="web"] .delta.better').text_content() == "−0.3750"
    assert "changes over decay (from step 3)" in page.locator("#cur-bpb-sub").text_content()
    assert not errors, errors
    page.close()
