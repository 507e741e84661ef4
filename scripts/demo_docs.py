"""Sample documents and small helpers for scripts/demo.sh.

    python scripts/demo_docs.py state OUT_DIR N NODE_URL
        writes N diplomas (OUT_DIR/diplomas.jsonl) and one business licence
        (OUT_DIR/licence.json), then prints shell assignments for demo.sh: the ids it
        shows (VALID_ID, REVOKED_ID, LICENCE_ID) and what the chain already holds
        (HAVE_DIPLOMAS, HAVE_LICENCE, HAVE_REVOKED: 1 or 0)
    python scripts/demo_docs.py wait [--pids=PID,...] SECONDS URL...
        wait until every URL answers 200 (exit 1 naming the first that did not); with
        --pids, give up as soon as one of those processes has exited

The documents are deterministic (same N, same documents), so a second run of the demo
finds the same ids on the chain and skips what is done. Names are invented.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import requests

from certificates.document import Document
from certificates.identifiers import CertificateId

UNIVERSITY = "11220000013544541J"  # 示例大学: a valid unified social credit code
DIPLOMA = "11100000000013338W032"  # diploma type code (18-char code + 3 digits)
BUREAU = "12440100MB2C3D4E5K"  # 示例市市场监督管理局
LICENCE = "11100000MB0000007D001"  # business licence type code
ISSUED = 1_751_328_000  # 2025-07-01 00:00 UTC

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛",
          "明", "超", "秀英", "华", "慧"]
_MAJORS = [("计算机科学与技术", "工学学士 Bachelor of Engineering"),
           ("法学", "法学学士 Bachelor of Laws"),
           ("临床医学", "医学学士 Bachelor of Medicine"),
           ("汉语言文学", "文学学士 Bachelor of Arts"),
           ("数学与应用数学", "理学学士 Bachelor of Science")]


def diploma(i: int) -> Document:
    major, degree = _MAJORS[i % len(_MAJORS)]
    name = _SURNAMES[i % len(_SURNAMES)] + _GIVEN[(i * 7) % len(_GIVEN)] + \
        _GIVEN[(i * 3 + 1) % len(_GIVEN)]
    serial = f"2025{i + 1:06d}"
    return Document(
        id=str(CertificateId.build(DIPLOMA, UNIVERSITY, serial, 1)), type=DIPLOMA,
        issuer=UNIVERSITY, holder=f"citizen-{i + 1:06d}",
        fields={"name": name, "degree": degree, "major": major,
                "university": "示例大学 Example University",
                "graduation_date": "2025-06-30", "student_number": f"2021{i + 1:06d}",
                "id_number": f"110105{1990 + i % 10}{1 + i % 12:02d}{1 + i % 28:02d}"
                             f"{i % 1000:03d}X"},
        issued_at=ISSUED, valid_from=ISSUED, valid_until=None)


def licence() -> Document:
    return Document(
        id=str(CertificateId.build(LICENCE, BUREAU, "4401002025000042", 1)), type=LICENCE,
        issuer=BUREAU, holder="company-91440101MA5C0001",
        fields={"company_name": "广州示例科技有限公司", "legal_representative": "陈示例",
                "registered_capital": "人民币壹佰万元整",
                "business_scope": "软件开发；信息技术咨询服务",
                "established": "2025-03-18", "uscc": "91440101MA5CX0001Q"},
        issued_at=ISSUED, valid_from=ISSUED, valid_until=ISSUED + 20 * 365 * 86400)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "state":
        out, n, node = Path(argv[1]), int(argv[2]), argv[3].rstrip("/")
        out.mkdir(parents=True, exist_ok=True)
        with (out / "diplomas.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps(diploma(i).to_json_dict(), ensure_ascii=False) + "\n")
        (out / "licence.json").write_text(
            json.dumps(licence().to_json_dict(), ensure_ascii=False, indent=1) + "\n",
            encoding="utf-8")
        with requests.Session() as s:
            def status(cid: str) -> str | None:
                r = s.get(f"{node}/v1/certificates/{cid}", timeout=10)
                return str(r.json()["record"]["status"]) if r.status_code == 200 else None

            valid, revoked, lic = diploma(0).id, diploma(1).id, licence().id
            print(f"VALID_ID={valid} REVOKED_ID={revoked} LICENCE_ID={lic}")
            print(f"HAVE_DIPLOMAS={int(status(diploma(n - 1).id) is not None)} "
                  f"HAVE_LICENCE={int(status(lic) is not None)} "
                  f"HAVE_REVOKED={int(status(revoked) == 'revoked')}")
        return 0
    if cmd == "wait":
        args, pids = argv[1:], []
        if args and args[0].startswith("--pids="):
            pids = [int(p) for p in args[0].removeprefix("--pids=").split(",") if p]
            args = args[1:]
        deadline = time.monotonic() + float(args[0])
        for url in args[1:]:
            while True:
                try:
                    if requests.get(url, timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                gone = [p for p in pids if not _running(p)]
                if gone:
                    print(f"{url} did not answer: process {gone[0]} has exited",
                          file=sys.stderr)
                    return 1
                if time.monotonic() > deadline:
                    print(f"{url} did not answer", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


def _running(pid: int) -> bool:
    # A child of the demo's shell that exited stays a zombie until the shell reaps it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
