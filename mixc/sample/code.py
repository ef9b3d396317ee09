"""Code samples: files in the source's programming language, plus HTML, Markdown, notebooks, issues.

Python, JavaScript, TypeScript, Java, C, C++, C#, Go, Rust, Swift, PHP, Ruby, Shell and SQL
files are function-level templates filled with identifiers and English comments; a code
source that names no language gets a per-document pick with a spread like a GitHub crawl.
"""

from __future__ import annotations

from ..spec import Source
from .dice import Dice
from .prose import ENGLISH, ENGLISH_TOPICS, english_sentence
from .words import WORDS

FN_VERBS: list[str] = WORDS["code"]["fn_verbs"]
FN_NOUNS: list[str] = WORDS["code"]["fn_nouns"]
SCALARS: list[str] = WORDS["code"]["scalars"]
ELEMENTS: list[str] = WORDS["code"]["elements"]
ACCUMULATORS: list[str] = WORDS["code"]["accumulators"]
CLASS_SUFFIXES: list[str] = WORDS["code"]["class_suffixes"]
NAMES: list[str] = WORDS["names"]


def _camel(parts: list[str]) -> str:
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _code_slots(dice: Dice, case: str) -> dict[str, str]:
    verb, noun = dice.common(FN_VERBS), dice.common(FN_NOUNS)
    a = dice.common(FN_NOUNS)
    fn = {"snake": f"{verb}_{noun}", "camel": _camel([verb, noun]), "pascal": verb.capitalize() + noun.capitalize()}[case]
    return {"fn": fn, "a": a, "b": dice.common(SCALARS), "item": dice.common(ELEMENTS), "acc": dice.common(ACCUMULATORS),
            "k": str(dice.between(2, 9)), "m": str(dice.between(2, 12)), "n": str(dice.between(1, 99)),
            "cls": noun.rstrip("s").capitalize() + dice.pick(CLASS_SUFFIXES), "doc": english_sentence(dice),
            "word": dice.common(ENGLISH.nouns)}


# Per language: identifier case, file header, and function-level templates (str.format with the slots above).
CODE = {
    "Python": ("snake", "import os\nimport json\nfrom typing import Dict, List\n\n", [
        'def {fn}({a}, {b}):\n    """{doc}"""\n    {acc} = 0\n    for {item} in {a}:\n        if {item} > {b}:\n'
        "            {acc} += {item} * {k}\n        else:\n            {acc} -= {m}\n    return {acc}\n",
        'def {fn}({a}, {b}={k}):\n    """{doc}"""\n    if not {a}:\n        return []\n'
        "    return [{item} + {b} for {item} in {a} if {item} % {m} == 0]\n",
        'class {cls}:\n    """{doc}"""\n\n    def __init__(self, {a}):\n        self.{a} = {a}\n        self.{acc} = {k}\n\n'
        "    def {fn}(self, {b}):\n        self.{acc} += {b} * {m}\n        return self.{a}.get({b}, self.{acc})\n",
        'def {fn}(path):\n    # {doc}\n    with open(path, encoding="utf-8") as f:\n        {a} = [line.strip() for line in f]\n'
        "    return {{{item}: len({item}) for {item} in {a}}}\n",
    ]),
    "JavaScript": ("camel", '"use strict";\n\nconst fs = require("fs");\n\n', [
        "function {fn}({a}, {b}) {{\n  // {doc}\n  let {acc} = 0;\n  for (const {item} of {a}) {{\n    if ({item} > {b}) {{\n"
        "      {acc} += {item} * {k};\n    }} else {{\n      {acc} -= {m};\n    }}\n  }}\n  return {acc};\n}}\n",
        "// {doc}\nconst {fn} = ({a}, {b} = {k}) =>\n  {a}.filter(({item}) => {item} % {m} === 0).map(({item}) => {item} + {b});\n",
        "class {cls} {{\n  constructor({a}) {{\n    this.{a} = {a};\n    this.{acc} = {k};\n  }}\n\n  {fn}({b}) {{\n"
        "    this.{acc} += {b} * {m};\n    return this.{a}[{b}] ?? this.{acc};\n  }}\n}}\n",
    ]),
    "TypeScript": ("camel", 'import {{ readFileSync }} from "fs";\n\n', [
        "export function {fn}({a}: number[], {b}: number): number {{\n  // {doc}\n  let {acc} = 0;\n  for (const {item} of {a}) {{\n"
        "    if ({item} > {b}) {{\n      {acc} += {item} * {k};\n    }} else {{\n      {acc} -= {m};\n    }}\n  }}\n  return {acc};\n}}\n",
        "export interface {cls} {{\n  {a}: number[];\n  {b}: number;\n  {word}?: string;\n}}\n",
        "/** {doc} */\nexport const {fn} = ({a}: number[], {b} = {k}): number[] =>\n"
        "  {a}.filter(({item}) => {item} % {m} === 0).map(({item}) => {item} + {b});\n",
    ]),
    "Java": ("camel", "package com.example.{word};\n\nimport java.util.ArrayList;\nimport java.util.List;\n\n", [
        "public class {cls} {{\n    // {doc}\n    public static int {fn}(int[] {a}, int {b}) {{\n        int {acc} = 0;\n"
        "        for (int {item} : {a}) {{\n            if ({item} > {b}) {{\n                {acc} += {item} * {k};\n"
        "            }} else {{\n                {acc} -= {m};\n            }}\n        }}\n        return {acc};\n    }}\n}}\n",
        "public class {cls} {{\n    private final List<Integer> {a} = new ArrayList<>();\n\n    /** {doc} */\n"
        "    public List<Integer> {fn}(int {b}) {{\n        List<Integer> out = new ArrayList<>();\n"
        "        for (int {item} : {a}) {{\n            if ({item} % {m} == 0) {{\n                out.add({item} + {b});\n"
        "            }}\n        }}\n        return out;\n    }}\n}}\n",
    ]),
    "C#": ("pascal", "using System;\nusing System.Collections.Generic;\n\n", [
        "public static class {cls}\n{{\n    // {doc}\n    public static int {fn}(int[] {a}, int {b})\n    {{\n        var {acc} = 0;\n"
        "        foreach (var {item} in {a})\n        {{\n            if ({item} > {b})\n            {{\n                {acc} += {item} * {k};\n"
        "            }}\n            else\n            {{\n                {acc} -= {m};\n            }}\n        }}\n        return {acc};\n    }}\n}}\n",
    ]),
    "C": ("snake", "#include <stdio.h>\n#include <stdlib.h>\n\n", [
        "/* {doc} */\nint {fn}(const int *{a}, size_t n, int {b})\n{{\n    int {acc} = 0;\n    for (size_t i = 0; i < n; i++) {{\n"
        "        if ({a}[i] > {b}) {{\n            {acc} += {a}[i] * {k};\n        }} else {{\n            {acc} -= {m};\n        }}\n"
        "    }}\n    return {acc};\n}}\n",
        "struct {cls} {{\n    int {b};\n    int {acc};\n    char name[{n}];\n}};\n",
    ]),
    "C++": ("snake", "#include <iostream>\n#include <string>\n#include <vector>\n\n", [
        "// {doc}\nint {fn}(const std::vector<int>& {a}, int {b}) {{\n    int {acc} = 0;\n    for (int {item} : {a}) {{\n"
        "        if ({item} > {b}) {{\n            {acc} += {item} * {k};\n        }} else {{\n            {acc} -= {m};\n        }}\n"
        "    }}\n    return {acc};\n}}\n",
        "class {cls} {{\npublic:\n    explicit {cls}(std::vector<int> {a}) : {a}_(std::move({a})) {{}}\n\n"
        "    int {fn}(int {b}) const {{\n        return static_cast<int>({a}_.size()) * {b} + {m};\n    }}\n\n"
        "private:\n    std::vector<int> {a}_;\n}};\n",
    ]),
    "Go": ("camel", "package {word}\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n)\n\n", [
        "// {fn} {doc}\nfunc {fn}({a} []int, {b} int) int {{\n\t{acc} := 0\n\tfor _, {item} := range {a} {{\n"
        "\t\tif {item} > {b} {{\n\t\t\t{acc} += {item} * {k}\n\t\t}} else {{\n\t\t\t{acc} -= {m}\n\t\t}}\n\t}}\n\treturn {acc}\n}}\n",
        "type {cls} struct {{\n\t{a} []string\n\t{b} int\n}}\n\nfunc (s *{cls}) {fn}() string {{\n"
        "\treturn fmt.Sprintf(\"%d: %s\", s.{b}, strings.Join(s.{a}, \",\"))\n}}\n",
    ]),
    "Rust": ("snake", "use std::collections::HashMap;\n\n", [
        "/// {doc}\npub fn {fn}({a}: &[i64], {b}: i64) -> i64 {{\n    let mut {acc} = 0;\n    for &{item} in {a} {{\n"
        "        if {item} > {b} {{\n            {acc} += {item} * {k};\n        }} else {{\n            {acc} -= {m};\n        }}\n"
        "    }}\n    {acc}\n}}\n",
        "pub struct {cls} {{\n    {a}: HashMap<String, i64>,\n}}\n\nimpl {cls} {{\n    pub fn {fn}(&mut self, name: &str) -> i64 {{\n"
        "        *self.{a}.entry(name.to_string()).or_insert({k}) * {m}\n    }}\n}}\n",
    ]),
    "Swift": ("camel", "import Foundation\n\n", [
        "/// {doc}\nfunc {fn}(_ {a}: [Int], {b}: Int) -> Int {{\n    var {acc} = 0\n    for {item} in {a} {{\n"
        "        if {item} > {b} {{\n            {acc} += {item} * {k}\n        }} else {{\n            {acc} -= {m}\n        }}\n"
        "    }}\n    return {acc}\n}}\n",
        "struct {cls} {{\n    var {a}: [String]\n    var {b}: Int = {k}\n\n    func {fn}() -> Int {{\n"
        "        return {a}.count * {b} + {m}\n    }}\n}}\n",
    ]),
    "PHP": ("camel", "<?php\n\ndeclare(strict_types=1);\n\n", [
        "// {doc}\nfunction {fn}(array ${a}, int ${b}): int\n{{\n    ${acc} = 0;\n    foreach (${a} as ${item}) {{\n"
        "        if (${item} > ${b}) {{\n            ${acc} += ${item} * {k};\n        }} else {{\n            ${acc} -= {m};\n        }}\n"
        "    }}\n    return ${acc};\n}}\n",
        "class {cls}\n{{\n    private array ${a} = [];\n\n    public function {fn}(int ${b}): int\n    {{\n"
        "        return count($this->{a}) * ${b} + {m};\n    }}\n}}\n",
    ]),
    "Ruby": ("snake", "require \"json\"\n\n", [
        "# {doc}\ndef {fn}({a}, {b})\n  {acc} = 0\n  {a}.each do |{item}|\n    if {item} > {b}\n      {acc} += {item} * {k}\n"
        "    else\n      {acc} -= {m}\n    end\n  end\n  {acc}\nend\n",
        "class {cls}\n  attr_reader :{a}\n\n  def initialize({a})\n    @{a} = {a}\n  end\n\n  def {fn}({b})\n"
        "    @{a}.select {{ |{item}| {item} % {m} == 0 }}.map {{ |{item}| {item} + {b} }}\n  end\nend\n",
    ]),
    "Shell": ("snake", "#!/usr/bin/env bash\nset -euo pipefail\n\n", [
        "# {doc}\n{fn}() {{\n  local dir=\"$1\"\n  for {item} in \"$dir\"/*.txt; do\n    if [ -f \"${item}\" ]; then\n"
        "      echo \"{word}: ${item}\"\n    fi\n  done\n}}\n",
        "{fn}() {{\n  local {b}=\"${{1:-{k}}}\"\n  local {acc}=0\n  for i in $(seq 1 \"${b}\"); do\n    {acc}=$(( {acc} + i * {m} ))\n"
        "  done\n  echo \"${acc}\"\n}}\n",
    ]),
    "SQL": ("snake", "", [
        "-- {doc}\nCREATE TABLE {a} (\n  id INTEGER PRIMARY KEY,\n  {b} TEXT NOT NULL,\n  {acc} INTEGER DEFAULT {k}\n);\n",
        "INSERT INTO {a} (id, {b}, {acc}) VALUES ({n}, '{word}', {m});\n",
        "SELECT {b}, COUNT(*) AS n, SUM({acc}) AS {fn}\nFROM {a}\nWHERE {acc} > {k}\nGROUP BY {b}\nORDER BY n DESC;\n",
    ]),
}


def _render_units(templates: list[str], dice: Dice, case: str, units: int) -> list[str]:
    return [dice.pick(templates).format(**_code_slots(dice, case)) for _ in range(units)]


def _code_file(language: str, dice: Dice) -> str:
    case, header, templates = CODE[language]
    units = dice.lognormal_count(3, 0.8, 1, 60)
    body = "\n".join(_render_units(templates, dice, case, units))
    if language == "Python" and dice.chance(0.5):
        slots = _code_slots(dice, case)
        body += f'\n\nif __name__ == "__main__":\n    print({slots["fn"]}([{slots["k"]}, {slots["m"]}, {slots["n"]}], {slots["k"]}))\n'
    return header.format(**_code_slots(dice, case)) + body


def _html_file(dice: Dice) -> str:
    topic = dice.pick(list(ENGLISH_TOPICS))
    items = "".join(f"      <li>{dice.common(ENGLISH_TOPICS[topic])}</li>\n" for _ in range(dice.between(2, 6)))
    paragraphs = "".join(f"    <p>{english_sentence(dice)} {english_sentence(dice)}</p>\n" for _ in range(dice.lognormal_count(3, 0.7, 1, 40)))
    return (f'<!DOCTYPE html>\n<html lang="en">\n  <head>\n    <meta charset="utf-8">\n    <title>{topic.capitalize()}</title>\n'
            f'    <link rel="stylesheet" href="style.css">\n  </head>\n  <body>\n    <h1>{topic.capitalize()}</h1>\n{paragraphs}'
            f'    <ul>\n{items}    </ul>\n    <a href="/{topic}/index.html">More about {topic}</a>\n  </body>\n</html>\n')


def _markdown_file(dice: Dice) -> str:
    slots = _code_slots(dice, "snake")
    parts = [f"# {slots['cls']}\n", " ".join(english_sentence(dice) for _ in range(dice.between(1, 4))), "## Installation\n",
             f"```bash\npip install {slots['word']}\n```", "## Usage\n", f"```python\n{dice.pick(CODE['Python'][2]).format(**slots)}```"]
    for _ in range(dice.lognormal_count(2, 0.7, 0, 20)):
        parts.append(f"## {dice.common(ENGLISH.adjs).capitalize()} {dice.common(ENGLISH.nouns)}\n")
        parts.append("\n".join(f"- {english_sentence(dice)}" for _ in range(dice.between(2, 5))))
    return "\n\n".join(parts) + "\n"


def _notebook_script(dice: Dice) -> str:
    """A notebook exported as a script: markdown cells as comments, code cells between markers."""
    case, header, templates = CODE["Python"]
    cells = ["# %% [markdown]\n# " + english_sentence(dice) + "\n\n# %%\n" + header.rstrip() + "\n"]
    for unit in _render_units(templates, dice, case, dice.lognormal_count(3, 0.7, 1, 40)):
        cells.append(f"# %% [markdown]\n# {english_sentence(dice)}\n\n# %%\n{unit}")
    return "\n".join(cells)


def _issue_thread(dice: Dice) -> str:
    slots = _code_slots(dice, "snake")
    comments = "\n\n".join(f"**{dice.pick(NAMES).lower()}** commented:\n{english_sentence(dice)} {english_sentence(dice)}"
                           for _ in range(dice.lognormal_count(2, 0.8, 0, 30)))
    return (f"Title: {slots['fn']} fails when {slots['b']} is zero\n\n{english_sentence(dice)}\n\n"
            f"```python\n{dice.pick(CODE['Python'][2]).format(**slots)}```\n\n{comments}\n")


PROGRAMMING_LANGUAGES = {name.lower(): name for name in [*CODE, "HTML", "Markdown", "Jupyter", "Issue"]}
PROGRAMMING_LANGUAGES.update({"cpp": "C++", "csharp": "C#", "c-sharp": "C#", "js": "JavaScript", "ts": "TypeScript",
                              "bash": "Shell", "sh": "Shell", "golang": "Go", "md": "Markdown", "notebook": "Jupyter"})
# A code source that names no language: a spread like a GitHub crawl, Python first.
CODE_MIX = ["Python", "Python", "Python", "JavaScript", "Java", "C++", "TypeScript", "Go", "Rust", "C", "Shell", "SQL", "Markdown"]


def programming_language(source: Source) -> str | None:
    """The code generator a source gets; None means a per-document pick from CODE_MIX."""
    if source.programming_language:
        return PROGRAMMING_LANGUAGES.get(source.programming_language.lower())
    lowered = source.name.lower()
    if "jupyter" in lowered or "kaggle" in lowered:
        return "Jupyter"
    if "issue" in lowered or "pull" in lowered:
        return "Issue"
    return None


def code_document(language: str | None, dice: Dice) -> str:
    language = language or dice.pick(CODE_MIX)
    if language == "HTML":
        return _html_file(dice)
    if language == "Markdown":
        return _markdown_file(dice)
    if language == "Jupyter":
        return _notebook_script(dice)
    if language == "Issue":
        return _issue_thread(dice)
    return _code_file(language, dice)
