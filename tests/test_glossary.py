"""The bilingual glossary: its data file, what a question becomes with it, and a bad file's refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from zantara_rag.errors import InvalidGlossary
from zantara_rag.language import LANGUAGES, words
from zantara_rag.retrieval.glossary import Glossary, GlossaryError, parse
from zantara_rag.services import build_services
from zantara_rag.settings import Settings


@pytest.fixture(scope="module")
def glossary() -> Glossary:
    return Glossary.load()


def test_the_bundled_glossary_has_both_languages_in_every_entry_and_each_term_once(
    glossary: Glossary,
) -> None:
    assert len(glossary.entries) >= 200
    owner: dict[tuple[str, tuple[str, ...]], str] = {}
    for entry in glossary.entries:
        for language in LANGUAGES:
            assert entry.terms(language), entry
            for term in entry.terms(language):
                key = (language, tuple(words(term)))
                assert owner.setdefault(key, entry.en[0]) == entry.en[0], f"{term!r} is in two entries"


@pytest.mark.parametrize(
    ("question", "into", "gloss"),
    [
        # The example: an Indonesian question about an English document.
        (
            "Berapa denda per hari kalau saya tinggal melewati masa berlaku izin tinggal?",
            "en",
            "fine day live expire stay permit",
        ),
        # An English question about an Indonesian document.
        ("Is health insurance compulsory for my staff?", "id", "asuransi kesehatan wajib karyawan"),
        # Word endings: -nya, plurals; the phrase "izin tinggal" beats the single words.
        ("dendanya berapa?", "en", "fine"),
        ("overstay fines for stay permits", "id", "overstay denda izin tinggal"),
        # Numbers, codes and acronyms are the same in both languages and are kept; unknown words are not.
        ("iuran BPJS kelas 3 mandiri", "en", "contribution BPJS 3"),
        ("minimum income for the E33G", "id", "minimal penghasilan E33G"),
        ("resep rendang daging sapi yang empuk", "en", ""),
    ],
)
def test_gloss(glossary: Glossary, question: str, into: str, gloss: str) -> None:
    assert glossary.expand(question, into).gloss == gloss  # type: ignore[arg-type]


def test_a_word_as_written_beats_a_word_that_only_shares_its_stem(glossary: Glossary) -> None:
    # pekerja (worker), mempekerjakan (to employ) and bekerja (to work) share the Indonesian stem "kerja".
    assert glossary.expand("mempekerjakan koki asing", "en").gloss == "hire chef foreign"
    assert glossary.expand("pekerja asing", "en").gloss == "foreign worker"
    # English: "employer" and "employ" share the stem "employ".
    assert glossary.expand("we want to employ one expat", "id").gloss == "mempekerjakan WNA"


def test_expansion_terms_cover_both_languages_of_each_concept(glossary: Glossary) -> None:
    expansion = glossary.expand("berapa pesangon kalau di-PHK", "en")
    assert {"severance", "pesangon", "termination", "PHK", "laid off"} <= set(expansion.terms)
    # Each meaningful word of the question, with the stems of its concept's terms (for the coverage).
    (pesangon, phk) = expansion.words
    assert "sangon" in pesangon[0] and "sever" in pesangon[1]
    assert phk[0] == frozenset({"phk"}) and "dismiss" in phk[1]


def test_a_question_the_glossary_does_not_know_comes_back_empty(glossary: Glossary) -> None:
    expansion = glossary.expand("who wrote Pride and Prejudice?", "id")
    assert expansion.entries == [] and expansion.gloss == ""
    assert [sorted(own) for own, alt in expansion.words] == [["wrote"], ["pride"], ["prejudic", "prejudice"]]
    assert all(not alt for _, alt in expansion.words)


def test_parse_refuses_malformed_glossaries_with_the_reason() -> None:
    assert parse("- en: [fine]\n  id: denda\n")[0].id == ("denda",)
    for text, reason in (
        ("en: fine", "expected a list"),
        ("- en: [fine]\n", "exactly the keys"),
        ("- en: [fine]\n  id: []\n", "at least one `id` term"),
        ("- en: [fine]\n  id: ['!!']\n", "at least one `id` term"),
        ("- en: [fine\n", "not valid YAML"),
    ):
        with pytest.raises(GlossaryError, match=reason):
            parse(text, "mine.yaml")


def test_an_operator_glossary_replaces_the_bundled_one(tmp_path: Path) -> None:
    path = tmp_path / "glossary.yaml"
    path.write_text("- en: [surfboard]\n  id: [papan selancar]\n", encoding="utf-8")
    mine = Glossary.load(Settings(glossary_path=path).glossary_path)
    assert mine.expand("sewa papan selancar", "en").gloss == "surfboard"
    with pytest.raises(ValidationError, match="is not a readable file"):
        Settings(glossary_path=tmp_path / "missing.yaml")


def test_the_service_refuses_to_start_on_a_malformed_glossary(tmp_path: Path) -> None:
    path = tmp_path / "glossary.yaml"
    path.write_text("- en: [fine]\n", encoding="utf-8")
    settings = Settings(chroma_path=tmp_path / "chroma", glossary_path=path, auto_ingest=False)
    with pytest.raises(InvalidGlossary, match="entry 1 must have exactly the keys"):
        asyncio.run(build_services(settings))
