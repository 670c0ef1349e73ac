"""Words of a text, in English and Indonesian: stop words, content words, the language of a question.

One implementation shared by the retrieval re-rank and the extractive answer.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
# Question words and function words (English and Indonesian) that say nothing about the topic.
_STOPWORD_LIST = """
    a about also am an and any are as at be been but by can could did do does for from get got had has have
    how i if in into is it its just know like many may me might more most much must my need no not of on or
    our please should so some still such than that the their then there these this those to too up very
    want was we were what when where which who why will with would you your
    ada adalah aja akan aku anda apa apakah atau bagaimana belum berapa bisa dalam dan dari dengan di dimana
    dong ga gak gimana harus ini itu jadi jika juga kalau kami kapan karena ke kita lagi mana mau nggak nya
    oleh pada per pun saja saya se sih siapa sudah tak tapi tidak untuk ya yang
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())
# Common Indonesian function words: one of them in a question is enough to answer in Indonesian.
_INDONESIAN_MARKERS = frozenset(
    ["yang", "apa", "apakah", "bagaimana", "berapa", "saya", "dengan", "untuk", "bisa", "harus"]
)


def words(text: str) -> list[str]:
    """The lower-case words of `text`, in order."""
    return _WORD.findall(text.lower())


def content_words(text: str, min_length: int = 2) -> frozenset[str]:
    """Lower-case words of at least `min_length` characters, without stop words."""
    return frozenset(w for w in words(text) if len(w) >= min_length and w not in STOPWORDS)


def looks_indonesian(text: str) -> bool:
    return not _INDONESIAN_MARKERS.isdisjoint(words(text))
