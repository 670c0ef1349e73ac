"""Helpers of the admin tests: the secret, tokens, documents to upload (a many-page PDF built by hand)."""

from __future__ import annotations

import time
from typing import Any

import jwt

ADMIN_SECRET = "test-admin-secret-0123456789abcdef-CURRENT"
ADMIN_EMAIL = "ops@balizero.com"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)

QUOKKA = """---
title: Quokka permit
url: https://balizero.com/kb/quokka-permit
language: en
---
# Quokka permit

## Fees
The Quokka permit is a fictional permit used by the Zantara test suite. It costs IDR 4,321 per day and is
issued by the Bali Zero test office in Denpasar within three working days.

## Documents
Bring a passport copy and a photo of the quokka. The sponsor signs the quokka guarantee letter.
"""

WOMBAT = """---
title: Wombat licence
language: en
---
# Wombat licence

The Wombat licence is another fictional licence of the test suite. It costs IDR 8,765 per year.
"""


def token(
    sub: str = ADMIN_EMAIL, *, scope: str | None = "admin", ttl: int = 600, secret: str = ADMIN_SECRET
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + ttl}
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(value: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value or token()}"}


def pdf(pages: list[list[str]], title: str = "Golden visa brochure") -> bytes:
    """A valid PDF with one page per list of lines (Helvetica text), written by hand."""
    font = len(pages) * 2 + 3
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
    ]
    for i, lines in enumerate(pages):
        text = "BT /F1 11 Tf 60 740 Td " + " ".join(f"({ln}) Tj 0 -14 Td" for ln in lines) + " ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode()))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)


def brochure(pages: int = 20) -> bytes:
    """A `pages`-page brochure; page 13 (or the last, when fewer) holds the fact the tests ask about."""
    body = []
    for number in range(1, pages + 1):
        lines = [f"Golden visa brochure page {number}."]
        if number == min(13, pages):
            lines += [
                "The golden visa platypus fee is IDR 13,131,313 for every applicant.",
                "It is paid at the platypus counter of the immigration office.",
            ]
        lines += [
            f"Section {number} describes the general conditions of stay, line {k}." for k in range(1, 25)
        ]
        body.append(lines)
    return pdf(body)
