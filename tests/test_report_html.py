"""Self-contained HTML reports (`unshell.report`) of real comparisons and audits.

* the lineage zoo's upscaled model (``tools/zoo.py``: base-s0's layers 1 and 2 duplicated, then
  trained) against its base: derived, and the duplicated layers show in the layer matrix;
* two zoo bases trained from different seeds: independent;
* a tokenizer-only comparison (the zoo's BPE against its extension);
* a Yi-style renamed Llama (``foreign_layouts``), with and without a copy of transformers' Llama code;
* a zoo fine-tune against its base with a wrong licence: derived, licence obligations;
* a checkpoint whose tensor names, folder name and card carry markup and web addresses.

Every page is checked the same way: it parses as well-formed HTML, and holds no script, no external
resource and no web address.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

import unshell
from foreign_layouts import make_tiny_llama, read_safetensors_dir, to_yi
from test_audit import _card, _zoo_pair
from test_audit_code import _rebranded_llama
from unshell.formats.safetensors import write_safetensors
from unshell.report import audit_html, compare_html, write_html
from unshell.report.html import chance_bound
from unshell.tokenizers.report import TokenizerComparison
from zoo_fixture import zoo

# Every element a report may hold: anything else came out of a model's files.
ELEMENTS = {
    *("html", "head", "meta", "title", "style", "body", "header", "nav", "section", "footer", "h1", "h2"),
    *("h3", "p", "ul", "li", "a", "div", "span", "strong", "code", "br", "blockquote", "dl", "dt", "dd"),
    *("table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "figcaption"),
    *("svg", "desc", "g", "text", "rect", "line", "polyline", "polygon", "circle"),
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HOSTILE_TENSOR = "model.layers.0.<script>alert(1)</script>.weight"
HOSTILE_FOLDER = "<img src=x onerror=alert(2)>"


class StrictPage(HTMLParser):
    """Records what a page is made of and everything that makes it malformed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: Counter[str] = Counter()
        self.best: list[tuple[int, int]] = []
        self.svg_titles: list[bool] = []
        self._svg_first_child = False
        self.style = ""
        self.text: list[str] = []
        self.doctype = False

    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if self._svg_first_child:
            self.svg_titles.append(tag == "title")
            self._svg_first_child = False
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.errors.append(f"event handler {name} on <{tag}>")
            if name in ("href", "src", "xlink:href") and not (value or "").startswith("#"):
                self.errors.append(f"{name}={value!r} on <{tag}>")
        if tag == "rect" and "best" in (values.get("class") or "").split():
            self.best.append((int(values["data-b"] or -1), int(values["data-a"] or -1)))

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)
        if tag == "svg":
            self._svg_first_child = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.style += data
        self.text.append(data)


def check_page(page: str) -> StrictPage:
    """Well-formed, self-contained, script-free; returns the parse for further checks."""
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "<script" not in lowered and "<link" not in lowered and "<iframe" not in lowered
    assert "<img" not in lowered and "<object" not in lowered and "<embed" not in lowered
    assert "javascript:" not in lowered
    parser = StrictPage()
    parser.feed(page)
    parser.close()
    assert parser.doctype, "no <!DOCTYPE html>"
    assert not parser.errors, parser.errors
    assert not parser.stack, f"unclosed: {parser.stack}"
    assert set(parser.tags) <= ELEMENTS, set(parser.tags) - ELEMENTS
    assert parser.tags["html"] == parser.tags["head"] == parser.tags["body"] == parser.tags["style"] == 1
    css = parser.style.lower()
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    assert "@media print" in css and "break-before: page" in css
    # Accessible: every SVG starts with its <title>, every table has header cells.
    assert parser.tags["svg"] == len(parser.svg_titles) and all(parser.svg_titles)
    assert parser.tags["th"] >= parser.tags["table"]
    return parser


def _pair(kind: str, name: str) -> unshell.CompareResult:
    pairs = zoo().derived if kind == "derived" else zoo().independent
    pair = next(p for p in pairs if p.name == name)
    result = unshell.compare(pair.a, pair.b)
    assert isinstance(result, unshell.CompareResult)
    return result


# -- compare ------------------------------------------------------------------------------------------


def test_upscaled_model_report_shows_the_duplicated_layers(tmp_path: Path) -> None:
    pair = next(p for p in zoo().derived if p.name == "base-s0->upscaled")
    assert pair.layers == (0, 1, 2, 1, 2, 3)  # the zoo duplicated base-s0's layers 1 and 2
    result = unshell.compare(pair.a, pair.b)
    assert isinstance(result, unshell.CompareResult)
    assert result.verdict == "derived" and "upscaled" in result.how

    similarity = result.layer_similarity
    assert similarity is not None
    assert similarity.layers_a == [0, 1, 2, 3] and similarity.layers_b == [0, 1, 2, 3, 4, 5]
    assert len(similarity.matrix) == 6 and all(len(row) == 4 for row in similarity.matrix)
    best = similarity.best_a()
    assert tuple(best) == pair.layers  # every layer of B finds the layer it was copied from
    assert [row["layer_a"] for row in result.layers] == best  # and agrees with the voting layer map
    duplicated = {a: [b for b, x in enumerate(best) if x == a] for a, n in Counter(best).items() if n > 1}
    assert duplicated == {1: [1, 3], 2: [2, 4]}
    for row, a in zip(similarity.matrix, best, strict=True):  # the copy stands far above the rest
        assert row[a] > 0.8 and sorted(row)[-2] < 0.3
    document = json.loads(json.dumps(result.to_dict()))
    assert document["layer_similarity"]["layers_b"] == [0, 1, 2, 3, 4, 5]
    assert document["layer_similarity"]["matrix"] == similarity.matrix
    profiles = document["evidence"]["std_profiles"]
    assert len(profiles["a"]["mlp.up.weight"]) == 4 and len(profiles["b"]["mlp.up.weight"]) == 6

    page = compare_html(result)
    parsed = check_page(page)
    assert "VERDICT: DERIVED" in page
    assert "the chance that independently trained models look this alike is below 1e-" in page.lower()
    assert 'id="heatmap-t"' in page
    # Every row's best cell is marked, the duplicated ones included, and the pattern is spelled out.
    assert sorted(parsed.best) == sorted(zip(similarity.layers_b, best, strict=True))
    assert {(1, 1), (3, 1), (2, 2), (4, 2)} <= set(parsed.best)
    assert "A&#x27;s layer 1 is the best match of B&#x27;s layers 1, 3" in page
    assert "A&#x27;s layer 2 is the best match of B&#x27;s layers 2, 4" in page
    assert "upscaled" in page
    # The std-profile statistic is drawn against the band of independent pairs, as not deciding.
    assert "This statistic does not decide." in page and 'id="profile-band-t"' in page
    assert f"{result.profile_correlation:.3f}" in page
    assert page.count('id="profile-') >= 7 + 1  # one chart per role, plus the band

    target = tmp_path / "report.html"
    target.write_text("an older report")
    write_html(page, target)
    assert target.read_text(encoding="utf-8") == page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


def test_independent_pair_report_says_the_heatmap_is_not_meaningful() -> None:
    result = _pair("independent", "base-s0<->base-s1")
    assert result.verdict == "independent" and result.p_value is not None

    page = compare_html(result)
    check_page(page)
    assert "VERDICT: INDEPENDENT" in page
    assert f"p = {result.p_value:.2g}" in page and "of the time" in page
    assert "Not meaningful for this pair" in page
    assert 'id="layer-pattern"' not in page  # no layer pattern is claimed for unrelated models
    assert "is the best match of B" not in page
    assert "Same design" in page  # architecture reuse is stated apart: both are Llama


def test_tokenizer_only_comparison_report() -> None:
    models = zoo().models
    result = unshell.compare(
        models["base-s0"] / "tokenizer.json", models["vocab-extended"] / "tokenizer.json"
    )
    assert isinstance(result, TokenizerComparison) and result.verdict == "extension"

    page = compare_html(result)
    check_page(page)
    assert "RELATION: EXTENSION" in page and "VERDICT" not in page
    relation = result.relation
    assert f"A {relation.size_a:,} / B {relation.size_b:,}" in page
    assert f"{relation.same_id:,}" in page and "BPE merges" in page


def test_p_value_bounds_read_as_sentences() -> None:
    assert chance_bound(0.0) == "below 1e-300"
    assert chance_bound(3e-13) == "below 1e-12"
    assert chance_bound(4.2e-7) == "below 1e-6"
    assert chance_bound(0.25) == "about 25% (p = 0.25)"
    assert chance_bound(0.004) == "about 0.4% (p = 0.004)"


# -- audit --------------------------------------------------------------------------------------------


@pytest.fixture
def yi_style(tmp_path: Path) -> Path:
    model = to_yi(make_tiny_llama(tmp_path / "llama"), tmp_path / "yi-tiny")
    _card(
        model, {"license": "apache-2.0"}, "# Yi-Tiny\n\nA bilingual model trained from scratch by our team."
    )
    return model


def test_yi_style_audit_report_shows_the_finding_its_advice_and_the_rename_map(yi_style: Path) -> None:
    result = unshell.audit(yi_style)
    assert result.level == "architecture-reuse-undisclosed"
    finding = next(f for f in result.findings if f.level == "architecture-reuse-undisclosed")

    page = audit_html(result)
    check_page(page)
    assert "LEVEL: ARCHITECTURE-REUSE-UNDISCLOSED" in page
    assert html.escape(finding.message) in page and html.escape(finding.advice) in page
    rename_map = page[page.index("Rename map (name in the model") :]
    rename_map = rename_map[: rename_map.index("</table>")]
    rows = re.findall(r"<tr><td><code>(.*?)</code></td><td><code>(.*?)</code></td></tr>", rename_map)
    assert rows == [
        ("model.layers.{i}.ln1.weight", "model.layers.{i}.input_layernorm.weight"),
        ("model.layers.{i}.ln2.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ]
    assert "not tested (no --against base or --library)" in page  # weights are not judged without a base
    assert "Yi <span" in page and "llama (matched as yi" in page  # declared against detected


def test_yi_style_audit_report_with_copied_model_code(yi_style: Path) -> None:
    (yi_style / "modeling_yi.py").write_text(_rebranded_llama())
    result = unshell.audit(yi_style)
    code = result.detected["code"][0]

    page = audit_html(result)
    check_page(page)
    assert "LEVEL: LICENCE-OBLIGATIONS-UNMET" in page
    assert "<code>transformers/models/llama/modeling_llama.py</code> (llama)" in page
    assert f"{code['similarity']:.2f} of the file is found in the reference" in page
    assert "class LlamaMLP -&gt; YiMLP" in page  # removed references, escaped
    assert "Obligations of copied model code" in page and "apache-2.0" in page


def test_derivative_audit_report_shows_weights_and_licence_obligations(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    _card(tuned, {"license": "mit"}, "# tuned\n\nOur own model.")
    result = unshell.audit(tuned, against=base)
    assert result.level == "undisclosed-derivative"

    page = audit_html(result)
    check_page(page)
    assert "LEVEL: UNDISCLOSED-DERIVATIVE" in page and "VERDICT: DERIVED" in page
    assert "base_model: zoo-base-7m" in page  # the advice
    obligations = {o["obligation"]: o["status"] for o in result.detected["licence"]["obligations"]}
    assert obligations["licence-copy"] == "missing"
    assert "licence-copy" in page and "MISSING" in page and "NEEDS A PERSON" in page
    assert "Apache License, Version 2.0" in page and "§4(a)" in page


# -- hostile input ------------------------------------------------------------------------------------


def test_markup_and_addresses_from_model_files_are_escaped(tmp_path: Path) -> None:
    clean = make_tiny_llama(tmp_path / "clean")
    hostile = tmp_path / HOSTILE_FOLDER
    shutil.copytree(clean, hostile)
    tensors = read_safetensors_dir(clean)
    tensors[HOSTILE_TENSOR] = tensors.pop("model.layers.0.mlp.down_proj.weight")
    write_safetensors(hostile / "model.safetensors", tensors, metadata={"format": "pt"})
    _card(
        hostile,
        {
            "license": "<script>alert(3)</script>",
            "base_model": "https://evil.example/<b>base</b>",
            "model_name": "</title><script>alert(4)</script>",
        },
        "# hostile\n\nSee http://evil.example/x.",
    )
    inspected = unshell.inspect(hostile)
    assert any(a.name == HOSTILE_TENSOR for a in inspected.renamed)

    comparison = unshell.compare(clean, hostile)
    audit = unshell.audit(hostile)
    compare_page, audit_page = compare_html(comparison), audit_html(audit)
    for page in (compare_page, audit_page):
        check_page(page)  # only the report's own elements, no script, no address
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in compare_page  # the tensor, in B's rename map
    assert "&lt;img src=x onerror=alert(2)&gt;" in compare_page  # the folder
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in audit_page  # the declared licence
    assert "https[:]//evil.example/&lt;b&gt;base&lt;/b&gt;" in audit_page  # defanged, escaped


def test_write_html_leaves_the_old_report_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("the previous report")
    with pytest.raises(UnicodeEncodeError):
        write_html("half a report \ud800", target)  # a lone surrogate cannot be written as UTF-8
    assert target.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    with pytest.raises(FileNotFoundError):
        write_html("<p>x</p>", tmp_path / "missing" / "report.html")


# --- search -------------------------------------------------------------------------------------------


def test_search_report_names_the_base_and_explains_the_adjustment(tmp_path: Path, fixtures_dir: Path) -> None:
    from unshell.library import Library, search
    from unshell.lineage.fingerprint import fingerprint
    from unshell.report import search_html

    base, tuned = _zoo_pair(tmp_path)
    library = Library(tmp_path / "known.sqlite")
    library.add(fingerprint(base, name="zoo/base-7m"))
    for name in ("stories260K.bin", "llama2xs.model.bin"):
        library.add(fingerprint(fixtures_dir / name, name=f"fixtures/{name}"))

    found = search(tuned, library, top=3)
    page = search_html(found)
    parser = check_page(page)
    text = " ".join(parser.text)
    assert "VERDICT: DERIVED" in text and "Best match" not in text  # the sentence names it instead
    assert "derived from zoo/base-7m's" in text and "Holm-adjusted over the whole library" in text
    assert "fixtures/llama2xs.model.bin" in text and "INDEPENDENT" in text
    assert parser.tags["table"] >= 2

    # Nothing in the library: said plainly, with what it does not mean.
    empty = Library(tmp_path / "other.sqlite")
    empty.add(fingerprint(fixtures_dir / "stories260K.bin", name="stories"))
    page = search_html(search(tuned, empty, top=3))
    check_page(page)
    assert "NO MATCH" in page and "not evidence of independent training" in page


def test_report_templates_ship_with_the_package() -> None:
    """Every template and style sheet the reports render is declared as package data, so an
    installed unshell writes the same pages as a checkout."""
    import fnmatch
    import tomllib

    import unshell.report

    root = Path(unshell.__file__).parent
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["unshell"]
    shipped = sorted((Path(unshell.report.__file__).parent / "templates").iterdir())
    assert {p.suffix for p in shipped} == {".html", ".css"}
    for path in shipped:
        relative = path.relative_to(root).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in declared), relative


def test_markup_escapes_values_and_svg_is_markup() -> None:
    from markupsafe import Markup

    from unshell.report.markup import render, safe_text
    from unshell.report.svg import heatmap_svg, line_chart_svg

    assert safe_text("<b>'x'</b> see https://evil.example") == (
        "&lt;b&gt;&#x27;x&#x27;&lt;/b&gt; see https[:]//evil.example"
    )
    assert safe_text(Markup("<em>ours</em>")) == "<em>ours</em>"
    chart = line_chart_svg("c", "</text><script>alert(1)</script>", (("A", [1.0, 2.0]),))
    assert isinstance(chart, Markup) and "<script>" not in chart and "&lt;script&gt;" in chart
    assert isinstance(heatmap_svg([0, 1], [0], [[0.9, 0.1]]), Markup)
    # A template prints a value escaped and defanged even where it forgets to ask for it.
    page = render(
        "search.html",
        title="<title>",
        toc=[("x", "http://evil.example")],
        version="0",
        doc={
            "library": {"path": "<lib>", "size": 0},
            "tested": 0,
            "screened_out": 0,
            "timing": {"candidates_ms": 0, "lineage_s": 0},
            "multiple_testing": {"note": "n"},
            "candidates": [],
            "notes": [],
        },
        suspect={
            "path": "<img src=x>",
            "name": None,
            "family": None,
            "signature": None,
            "hidden": None,
            "vocab_size": None,
            "tokenizer_family": None,
            "content_hashes": 0,
        },
        best=None,
        others=0,
        headline="",
        meaning="",
        how_to_read=[],
        verdict_meaning={},
    )
    check_page(page)
    assert "&lt;img src=x&gt;" in page and "http[:]//evil.example" in page and "&lt;lib&gt;" in page


# --- real third-party files (tests/artifacts.py) -----------------------------------------------------


def _architecture_row(page: str, label: str) -> list[str]:
    """The cells (A, B, A vs B) of one row of the compare report's architecture table."""
    row = re.search(rf'<tr><th scope="row">{re.escape(label)}</th>(.*?)</tr>', page)
    assert row is not None, label
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row.group(1))]


@pytest.mark.slow
def test_int8_onnx_against_its_fp32_original_shows_the_layer_map_in_cli_and_html(tmp_path: Path) -> None:
    """The int8 ONNX export's matrices are anonymous initializers (``val_49``...): no name gives a
    layer index, so they are placed by file order, and layer n of one side matches layer n of the
    other in both the CLI's layer map and the HTML heatmap."""
    from click.testing import CliRunner

    from artifacts import fetch
    from unshell.cli.main import cli

    int8, fp32 = fetch("minilm_int8_onnx"), fetch("minilm_gt_dir")
    report = tmp_path / "report.html"
    shown = CliRunner().invoke(cli, ["compare", str(int8), str(fp32), "--html", str(report)])
    assert shown.exit_code == 0, shown.output
    assert "DERIVED" in shown.output and "< 1e-300" in shown.output
    table = shown.output[shown.output.index("Layer map") :].splitlines()[3:]
    rows = [line.split() for line in table if line.strip()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(layer, layer) for layer in range(6)]

    page = report.read_text(encoding="utf-8")
    parsed = check_page(page)
    assert "No layer heatmap" not in page and 'id="heatmap-t"' in page
    assert sorted(parsed.best) == [(layer, layer) for layer in range(6)]  # the diagonal
    assert "Every layer of B matches its own layer of A, in order" in page

    # The other way round (the fp32 original as A): the same diagonal.
    result = unshell.compare(fp32, int8)
    assert isinstance(result, unshell.CompareResult) and "quantized" in result.how
    assert [(row["layer_b"], row["layer_a"]) for row in result.layers] == [(n, n) for n in range(6)]
    similarity = result.layer_similarity
    assert similarity is not None and similarity.best_a() == list(range(6))


@pytest.mark.slow
def test_pruned_l3_report_shows_which_layers_of_a_its_layers_match() -> None:
    """paraphrase-MiniLM-L3 (3 layers, anonymous ONNX matrices) against all-MiniLM-L6 (6 layers):
    'pruned', with the layer map behind it; its ONNX file declares no head count, which reads
    "unknown", not a difference."""
    from artifacts import fetch

    result = unshell.compare(fetch("minilm_gt_dir"), fetch("paraphrase_minilm_onnx"))
    assert isinstance(result, unshell.CompareResult)
    assert result.verdict == "derived" and "pruned" in result.how
    assert [row["layer_b"] for row in result.layers] == [0, 1, 2]
    assert all(row["layer_a"] in range(6) for row in result.layers)
    similarity = result.layer_similarity
    assert (
        similarity is not None and similarity.layers_b == [0, 1, 2] and similarity.layers_a == list(range(6))
    )

    page = compare_html(result)
    parsed = check_page(page)
    assert 'id="heatmap-t"' in page and "No layer heatmap" not in page
    assert len(parsed.best) == 3
    assert "Layer map: each layer of B, the layer of A most of its matrices match" in page
    # Three rows of B pick at most three of A's six layers: the rest are named as dropped.
    pattern = page[page.index('id="layer-pattern"') :]
    assert "no B layer&#x27;s best match: dropped (pruned)" in pattern[: pattern.index("</div>")]

    assert _architecture_row(page, "attention heads") == ["12", "unknown", "unknown"]
    assert _architecture_row(page, "layers") == ["6", "3", "differs"]
    assert _architecture_row(page, "hidden size") == ["384", "384", "same"]


@pytest.mark.slow
def test_identical_has_its_own_colour_and_a_legend() -> None:
    from artifacts import fetch

    result = unshell.compare(fetch("minilm_gt_dir"), fetch("minilm_zip_dir"))
    assert isinstance(result, unshell.CompareResult) and result.verdict == "identical"
    page = compare_html(result)
    parsed = check_page(page)
    assert '<div class="verdict lv-same" role="status"><div class="word">VERDICT: IDENTICAL</div>' in page
    css = {
        rule.group(1): rule.group(2)
        for rule in re.finditer(r"^\.(lv-\w+) \{ (.*?) \}$", parsed.style, flags=re.MULTILINE)
    }
    assert css["lv-same"] != css["lv-bad"]  # not the red of "derived"
    legend = page[page.index('id="verdict-legend"') :]
    legend = legend[: legend.index("</table>")]
    assert re.findall(r'<span class="badge (lv-\w+)">(\w+)</span>', legend) == [
        ("lv-same", "IDENTICAL"),
        ("lv-bad", "DERIVED"),
        ("lv-unsure", "INCONCLUSIVE"),
        ("lv-ok", "INDEPENDENT"),
    ]
