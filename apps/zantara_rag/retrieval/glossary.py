"""The bilingual glossary: Indonesian ↔ English domain terms, and what a question becomes with it.

The terms are data (`glossary.yaml` beside this module, or `GLOSSARY_PATH`): one entry per concept, each with
its English and its Indonesian terms. A question is matched against every term of both languages (longest
phrase first, each word compared by its stem in the term's language, so `dendanya` finds `denda` and
`permits` finds `permit`). What the retriever gets back (`Expansion`):

- `terms`: every term of every matched entry, both languages, to add to the lexical query (an Indonesian
  question about an English document then also asks for the English words, and the other way round);
- `gloss`: what the question says in the other language, as far as the glossary knows: the first term of each
  matched entry in that language, plus the question's numbers, codes and acronyms (2025, E33G, BPJS). It is
  embedded beside
  the question. The English embedding model reads "Berapa denda per hari kalau saya tinggal melewati masa
  berlaku izin tinggal?" poorly and "fine day expire stay permit" well; words the glossary does not know are
  left out, so an off-topic Indonesian question ("resep rendang daging sapi") has an empty or near-empty
  gloss, which is what lets the off-topic cut-off work for Indonesian (docs/retrieval.md);
- `words`: each meaningful word of the question with its stems and, when it is part of a matched phrase, the
  stems of the entry's terms: what `LexicalIndex.coverage` counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..language import LANGUAGES, Language, index_terms, is_term, stems, words

BUNDLED = "glossary.yaml"


class GlossaryError(ValueError):
    """The glossary file is not a list of {en: [...], id: [...]} entries."""


@dataclass(frozen=True)
class Entry:
    """One concept: its terms in each language, the first the preferred one."""

    en: tuple[str, ...]
    id: tuple[str, ...]

    def terms(self, language: Language) -> tuple[str, ...]:
        return self.en if language == "en" else self.id


@dataclass
class Expansion:
    """A question seen through the glossary."""

    entries: list[Entry] = field(default_factory=list)
    gloss: str = ""
    words: list[tuple[frozenset[str], frozenset[str]]] = field(default_factory=list)

    @property
    def terms(self) -> list[str]:
        return [t for e in self.entries for language in LANGUAGES for t in e.terms(language)]


def _code(word: str) -> bool:
    """A number, a code or an acronym (2025, E33G, BPJS): the same in both languages."""
    return any(c.isdigit() for c in word) or (len(word) >= 2 and word.isupper())


def _key(word: str, language: Language) -> str:
    forms = stems(word)
    return forms[0] if language == "en" or len(forms) == 1 else forms[1]


class Glossary:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        # Phrases by their first word: as written (lower-case), and by stems in the term's language.
        self._written: dict[str, list[tuple[tuple[str, ...], Entry]]] = {}
        self._stemmed: dict[tuple[Language, str], list[tuple[tuple[str, ...], Entry]]] = {}
        for entry in entries:
            for language in LANGUAGES:
                for term in entry.terms(language):
                    written = tuple(words(term))
                    if not written:
                        continue
                    self._written.setdefault(written[0], []).append((written, entry))
                    keys = tuple(_key(w, language) for w in written)
                    self._stemmed.setdefault((language, keys[0]), []).append((keys, entry))
        for table in (self._written, self._stemmed):
            for candidates in table.values():
                candidates.sort(key=lambda c: -len(c[0]))
        self._stems = {
            entry: frozenset(
                t for language in LANGUAGES for term in entry.terms(language) for t in index_terms(term)
            )
            for entry in entries
        }

    @classmethod
    def load(cls, path: Path | None = None) -> Glossary:
        """The glossary at `path`, or the bundled one; a malformed file raises `GlossaryError`."""
        if path is None:
            text = resources.files(__package__ or "").joinpath(BUNDLED).read_text(encoding="utf-8")
            where = BUNDLED
        else:
            text = path.read_text(encoding="utf-8")
            where = str(path)
        return cls(parse(text, where))

    def expand(self, question: str, into: Language) -> Expansion:
        """The entries `question` mentions, and what it says in the language `into` (module docstring)."""
        tokens = words(question)
        written = re.findall(r"\w+", question)  # as typed: an acronym (BPJS, KITAS) is kept in the gloss
        keys = {language: [_key(w, language) for w in tokens] for language in LANGUAGES}
        found: list[Entry] = []
        gloss: list[str] = []
        meaningful: list[tuple[frozenset[str], frozenset[str]]] = []
        i = 0
        while i < len(tokens):
            match = self._match(tokens, keys, i)
            length, entry = match if match is not None else (1, None)
            alt: frozenset[str] = frozenset()
            if entry is not None:
                if entry not in found:
                    found.append(entry)
                gloss.append(entry.terms(into)[0])
                alt = self._stems[entry]
            elif _code(written[i] if len(written) == len(tokens) else tokens[i]):
                gloss.append(written[i] if len(written) == len(tokens) else tokens[i])
            for word in tokens[i : i + length]:
                if is_term(word) and not word.isdigit():
                    meaningful.append((frozenset(stems(word)), alt))
            i += length
        return Expansion(found, " ".join(dict.fromkeys(gloss)), meaningful)

    def _match(
        self, tokens: list[str], keys: dict[Language, list[str]], start: int
    ) -> tuple[int, Entry] | None:
        """The longest phrase at `start`; a phrase matching as written beats one matching by stems.

        Stems alone cannot tell the derived Indonesian words apart (`pekerja` worker, `mempekerjakan` to
        employ and `bekerja` to work share the stem `kerja`), nor `employer` from `employ`.
        """
        best: tuple[int, Entry] | None = None
        for phrase, entry in self._written.get(tokens[start], ()):
            if tuple(tokens[start : start + len(phrase)]) == phrase:
                best = (len(phrase), entry)
                break  # candidates are longest first
        for language in LANGUAGES:
            seq = keys[language]
            for phrase, entry in self._stemmed.get((language, seq[start]), ()):
                if len(phrase) <= (best[0] if best else 0):
                    break
                if tuple(seq[start : start + len(phrase)]) == phrase:
                    best = (len(phrase), entry)
                    break
        return best


def parse(text: str, where: str = "glossary") -> list[Entry]:
    """Entries from the YAML text; every entry needs at least one term in each language."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GlossaryError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, list):
        raise GlossaryError(f"{where}: expected a list of entries with `en` and `id` terms")
    entries = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or set(item) != {"en", "id"}:
            raise GlossaryError(f"{where}: entry {number} must have exactly the keys `en` and `id`")
        terms: dict[str, tuple[str, ...]] = {}
        for language in LANGUAGES:
            value = item[language]
            listed = value if isinstance(value, list) else [value]
            cleaned = tuple(str(t).strip() for t in listed if str(t).strip())
            if not cleaned or not all(words(t) for t in cleaned):
                raise GlossaryError(
                    f"{where}: entry {number} needs at least one `{language}` term with a word"
                )
            terms[language] = cleaned
        entries.append(Entry(terms["en"], terms["id"]))
    return entries
