"""Words of both languages: the language of a question, stop words, stems, the terms BM25 indexes."""

from __future__ import annotations

import json

import pytest

from tests.harness import ROOT
from zantara_rag.language import (
    STOPWORDS,
    detect_language,
    index_terms,
    is_term,
    stem,
    stems,
    words,
)

LABELLED = [
    *json.loads((ROOT / "tests" / "data" / "questions.json").read_text(encoding="utf-8")),
    *json.loads((ROOT / "tests" / "data" / "offtopic.json").read_text(encoding="utf-8")),
]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("How much is the overstay fine per day?", "en"),
        ("Berapa denda per hari kalau saya tinggal melewati masa berlaku izin tinggal?", "id"),
        # Short Indonesian questions without a function word: the marker-word test called these English.
        ("pesangon PHK karyawan masa kerja 3 tahun", "id"),
        ("batas waktu SPT tahunan badan", "id"),
        ("overstay fine?", "en"),
        ("minimum income for the E33G", "en"),
        ("", "en"),
        ("?? 123", "en"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_every_labelled_question_is_identified_in_its_language() -> None:
    wrong = [q["question"] for q in LABELLED if detect_language(q["question"]) != q["language"]]
    assert not wrong, wrong


def test_stop_words_of_both_languages_are_dropped_and_both_stems_kept() -> None:
    assert index_terms("What is the fine for overstaying?") == ["fine", "overstay", "overstaying"]
    # "apakah", "saya", "harus" are stop words; "membayar" keeps its English form and its Indonesian stem.
    assert index_terms("Apakah saya harus membayar dendanya?") == ["membayar", "bayar", "dendanya", "denda"]


def test_an_indonesian_word_in_an_english_text_meets_the_same_word_in_an_indonesian_question() -> None:
    english_document = set(index_terms("Severance pay (uang pesangon) depends on years of service."))
    indonesian_question = set(index_terms("berapa pesangonnya?"))
    assert "sangon" in english_document & indonesian_question


def test_inflections_of_each_language_meet() -> None:
    assert set(index_terms("fines")) & set(index_terms("fine"))
    assert set(index_terms("dilaporkan")) & set(index_terms("laporan")) == {"lapor"}
    assert stem("permits", "en") == "permit" and stem("perpanjangan", "id") == "panjang"
    assert stems("visa") == ("visa",)


def test_words_and_terms() -> None:
    assert words("PT PMA's 2,5 miliar!") == ["pt", "pma", "s", "2", "5", "miliar"]
    assert not is_term("a") and not is_term("yang") and is_term("kitas") and is_term("e33g")
    assert {"the", "yang", "nggak", "sekarang"} <= STOPWORDS
