"""Documents and wallets on disk for the issuer commands (node/cli_issuer.py).

* ``read_document`` takes one JSON document, or a wallet (to issue what it holds);
  ``read_documents`` a whole .jsonl or .csv batch, checked as one batch (one issuer,
  no repeated id, no supersedes) before anything is signed. Every error is a
  ``DocumentError`` naming the file and, for a batch, the line.
* A wallet is written exclusively and 0600 (it holds the holder's personal data and
  the salts). ``committed_with_wallet`` reuses a wallet that already holds the same
  document, so a retry after a failed submission anchors the same digest, and refuses
  one that holds another document or another version of it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from certificates import jsonio
from certificates.document import CommittedDocument, Document, commit
from certificates.errors import DocumentError


def read_json(path: Path) -> Any:
    try:
        return jsonio.read(path)
    except ValueError as exc:
        raise DocumentError(f"{path} is not a JSON document: {exc}") from exc


def read_document(path: Path) -> Document:
    data = read_json(path)
    if isinstance(data, dict) and "salts" in data:  # a wallet: issue what it holds
        return CommittedDocument.from_wallet_dict(data).document
    try:
        return Document.from_json_dict(data)
    except DocumentError as exc:
        raise DocumentError(f"{path}: {exc}") from exc


def committed_with_wallet(doc: Document, wallet: Path) -> CommittedDocument:
    """Salts from ``wallet`` if it already holds ``doc``, else fresh ones written there."""
    old = wallet_holding(doc, wallet)
    return old if old is not None else write_wallet(doc, wallet)


def wallet_holding(doc: Document, wallet: Path) -> CommittedDocument | None:
    """What ``wallet`` holds if it is a wallet for ``doc``; None if there is no such file.
    A wallet for another document (or another version of it) is a ``DocumentError``."""
    if wallet.exists():
        old = CommittedDocument.from_wallet_dict(read_json(wallet))
        if old.document != doc:
            if old.document.id != doc.id:
                raise DocumentError(f"{wallet} already holds a wallet for another document "
                                    f"({old.document.id}); choose another path")
            differ = [f.name for f in dataclass_fields(doc)
                      if getattr(old.document, f.name) != getattr(doc, f.name)]
            raise DocumentError(f"{wallet} already holds a wallet for another version of "
                                f"{doc.id} (differing in {', '.join(differ)}); choose another "
                                "path, or remove it if that version was never issued")
        return old
    return None


def write_wallet(doc: Document, wallet: Path) -> CommittedDocument:
    """Commit ``doc`` with fresh salts and write its wallet; the file must not exist."""
    committed = commit(doc)
    text = json.dumps(committed.to_wallet_dict(), ensure_ascii=False, indent=1) + "\n"
    # Exclusive and 0600: a wallet holds the holder's personal data and its salts.
    fd = os.open(wallet, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return committed


_CSV_META = ("id", "type", "issuer", "holder", "issued_at", "valid_from", "valid_until")


def _csv_time(text: str, column: str) -> int:
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise DocumentError(f"{column} must be an integer (epoch seconds), "
                            f"got {shown!r}") from None


def _csv_rows(path: Path, reader: Any) -> Iterator[list[str]]:
    """The rows of ``reader``; a CSV error (a field over the size limit, say)
    names the line it was found on, as every other error in the file does."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DocumentError(f"{path} line {reader.line_num}: bad CSV: {exc}") from None
        yield row


def _csv_documents(path: Path) -> Iterable[tuple[int, Document]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        rows = _csv_rows(path, reader)
        header = [h.strip() for h in next(rows, [])]
        missing = [c for c in _CSV_META if c not in header]
        if missing:
            raise DocumentError(f"{path} line 1: the header lacks {', '.join(missing)}; it needs "
                                f"{','.join(_CSV_META)} and one column per field")
        if len(set(header)) != len(header):
            raise DocumentError(f"{path} line 1: a column name appears twice")
        if "supersedes" in header:
            raise DocumentError(f"{path} line 1: a batch cannot supersede; use certledger "
                                "supersede OLD_ID NEW_DOC for each renewal")
        names = [h for h in header if h not in _CSV_META]
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            line = reader.line_num
            if len(row) != len(header):
                raise DocumentError(f"{path} line {line}: {len(row)} values for "
                                    f"{len(header)} columns")
            rec = dict(zip(header, row, strict=True))
            try:
                until = rec["valid_until"].strip()
                yield line, Document(
                    id=rec["id"].strip(), type=rec["type"].strip(),
                    issuer=rec["issuer"].strip(), holder=rec["holder"],
                    fields={n: rec[n] for n in names if rec[n] != ""},
                    issued_at=_csv_time(rec["issued_at"], "issued_at"),
                    valid_from=_csv_time(rec["valid_from"], "valid_from"),
                    valid_until=_csv_time(until, "valid_until") if until else None)
            except DocumentError as exc:
                raise DocumentError(f"{path} line {line}: {exc}") from None


def _jsonl_documents(path: Path) -> Iterable[tuple[int, Document]]:
    # utf-8-sig: a byte order mark (Windows editors add one) is accepted, as for CSV.
    with path.open(encoding="utf-8-sig") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                yield line, Document.from_json_dict(jsonio.loads(text))
            except DocumentError as exc:
                raise DocumentError(f"{path} line {line}: {exc}") from None
            except ValueError as exc:
                raise DocumentError(f"{path} line {line}: not JSON: {exc}") from None


def read_documents(path: Path) -> list[Document]:
    """Every document in a .jsonl or .csv file, checked as one batch (one issuer, no
    repeated id, no supersedes); errors name the file and line."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DocumentError(f"{path}: expected a .jsonl or .csv file, not {suffix or 'no suffix'}")
    reader = _csv_documents if suffix == ".csv" else _jsonl_documents
    docs: list[Document] = []
    seen: dict[str, int] = {}
    try:
        for line, doc in reader(path):
            if doc.supersedes is not None:
                raise DocumentError(f"{path} line {line}: a batch cannot supersede; use "
                                    "certledger supersede OLD_ID NEW_DOC")
            if docs and doc.issuer != docs[0].issuer:
                raise DocumentError(f"{path} line {line}: issuer {doc.issuer} differs from "
                                    f"{docs[0].issuer}; one batch is one issuer's")
            if doc.id in seen:
                raise DocumentError(f"{path} line {line}: id {doc.id} repeats line {seen[doc.id]}")
            seen[doc.id] = line
            docs.append(doc)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path} is not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise DocumentError(f"{path}: bad CSV: {exc}") from None
    if not docs:
        raise DocumentError(f"{path} holds no documents")
    return docs


def default_wallet(doc_path: Path) -> Path:
    return doc_path.with_name(doc_path.stem + ".wallet.json")
