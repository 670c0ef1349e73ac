"""The extractive answer speaks the question's language as far as the passages allow."""

from __future__ import annotations

from zantara_rag.domain import Passage, chunk_text
from zantara_rag.generation.extractive import (
    LABEL_EN,
    LABEL_EN_QUOTING_ID,
    LABEL_ID,
    LABEL_ID_QUOTING_EN,
    NOTHING_EN,
    NOTHING_ID,
    compose,
)

OVERSTAY_EN = Passage(
    1,
    "Overstay fines and consequences",
    None,
    None,
    "knowledge/overstay-fines.md",
    0.7,
    [
        chunk_text(
            "Overstay fines and consequences",
            "The fine",
            "The overstay charge is IDR 1,000,000 per person per day. Children are charged the same daily "
            "amount as adults.",
        )
    ],
    language="en",
)
BPJS_ID = Passage(
    2,
    "BPJS Kesehatan: kepesertaan dan iuran",
    None,
    None,
    "knowledge/bpjs-kesehatan.md",
    0.6,
    [
        chunk_text(
            "BPJS Kesehatan: kepesertaan dan iuran",
            "Besaran iuran",
            "Iuran BPJS Kesehatan sebesar 5% dari upah per bulan, 4% dibayar pemberi kerja dan 1% dipotong "
            "dari gaji pekerja. Pemberi kerja wajib mendaftarkan seluruh pekerjanya.",
        ),
    ],
    language="id",
)
BPJS_EN = Passage(
    3,
    "Social security notes",
    None,
    None,
    "knowledge/notes.md",
    0.65,
    [
        chunk_text(
            "Social security notes",
            "BPJS",
            "The BPJS Kesehatan contribution is 5% of the monthly wage, of which the employer pays 4%.",
        )
    ],
    language="en",
)


def test_the_label_is_in_the_questions_language() -> None:
    english = compose("What is the overstay fine per day?", [OVERSTAY_EN])
    assert english.startswith(LABEL_EN) and "IDR 1,000,000" in english
    indonesian = compose("Berapa iuran BPJS Kesehatan per bulan?", [BPJS_ID])
    assert indonesian.startswith(LABEL_ID) and "5% dari upah" in indonesian


def test_a_short_indonesian_question_without_function_words_gets_the_indonesian_label() -> None:
    # "iuran bpjs kesehatan karyawan" has none of the old marker words (yang, apa, berapa...).
    assert compose("iuran bpjs kesehatan karyawan", [BPJS_ID]).startswith(LABEL_ID)


def test_sentences_in_the_questions_language_are_preferred_when_the_passages_have_them() -> None:
    # Five sentences, four kept: the one left out is in the other language than the question's.
    both = [OVERSTAY_EN, BPJS_ID, BPJS_EN]
    indonesian = compose("iuran BPJS Kesehatan berapa persen dari upah?", both)
    assert indonesian.startswith(LABEL_ID)
    assert "Pemberi kerja wajib mendaftarkan seluruh pekerjanya. [2]" in indonesian
    assert "Children are charged" not in indonesian
    english = compose("How much is the BPJS Kesehatan contribution from the wage?", both)
    assert english.startswith(LABEL_EN)
    assert "Children are charged the same daily amount as adults. [1]" in english
    assert "Pemberi kerja wajib" not in english
    # Citations keep pointing at the passage each sentence came from.
    assert "of which the employer pays 4%. [3]" in english and "dari gaji pekerja. [2]" in english


def test_quotes_from_the_other_language_only_are_said_to_be_so_in_the_questions_language() -> None:
    answer = compose("Berapa denda overstay per hari?", [OVERSTAY_EN])
    assert answer.startswith(LABEL_ID_QUOTING_EN) and "berbahasa Inggris" in answer.splitlines()[0]
    assert "IDR 1,000,000 per person per day" in answer
    assert compose("What is the BPJS contribution?", [BPJS_ID]).startswith(LABEL_EN_QUOTING_ID)


def test_nothing_found_is_said_in_the_questions_language() -> None:
    assert compose("resep rendang daging sapi yang empuk", []) == NOTHING_ID
    assert compose("recipe for nasi goreng", []) == NOTHING_EN
