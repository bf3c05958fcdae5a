"""Build the shipped raw data files from the authoring sources in data/source/.

The sources (one JSON per topic: documents + QA) are where the data set is edited. This script
writes what a company export would look like, deterministically:

  data/raw/*.{json,jsonl,csv}     the clean export, spread over formats/encodings (one CSV in CP949)
  data/splits.csv                 the fixed per-document split (train/validation/test)
  data/dirty/dirty_export.jsonl   a deliberately broken export for teaching validation
  data/dirty_manifest.csv         line -> defect kind -> what validation must do with it (with data/raw)
  data/custom/clinic_faq.csv      the second-domain set with its own (Korean) column names

Run `python scripts/build_data.py` after editing data/source/; tests check the outputs are in sync.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "data" / "source"

# topic -> (file name, format, encoding)
EXPORTS = {
    "hr": ("hr_policies.json", "json", "utf-8"),
    "fin": ("finance_expense_rules.csv", "csv", "cp949"),
    "it": ("it_helpdesk.jsonl", "jsonl", "utf-8"),
    "sec": ("security_policy.jsonl", "jsonl", "utf-8"),
    "prod": ("product_manuals.json", "json-records", "utf-8"),
    "cs": ("customer_faq.csv", "csv", "utf-8-sig"),
    "fac": ("facilities.jsonl", "jsonl", "utf-8"),
}
RAW_FIELDS = ["id", "doc_id", "topic", "title", "q", "doc", "a", "cot", "type"]
SPLIT_FRACTIONS = {"validation": 0.1, "test": 0.1}
CLINIC_COLUMNS = {  # canonical field -> column name in the clinic's own export
    "id": "문항번호",
    "doc_id": "문서번호",
    "topic": "분류",
    "title": "문서제목",
    "doc": "참고문서",
    "q": "문의내용",
    "a": "답변",
    "cot": "근거설명",
}


def _rank(key: str) -> str:
    return hashlib.sha1(f"nurion-split-v1:{key}".encode()).hexdigest()


def load_sources() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SRC.glob("*.json"))}


def raw_records(src: dict) -> list[dict]:
    docs = {d["doc_id"]: d for d in src["documents"]}
    out = []
    for q in src["qa"]:
        d = docs[q["doc_id"]]
        out.append({
            "id": q["id"], "doc_id": q["doc_id"], "topic": src["topic"], "title": d["title"],
            "q": q["q"], "doc": d["text"], "a": q["a"], "cot": q["cot"], "type": q["type"],
        })
    return out


def assign_splits(sources: dict[str, dict]) -> list[tuple[str, str, str]]:
    """Per topic, order documents by a salted hash and cut ~80/10/10 (at least one doc per split)."""
    rows = []
    for topic, src in sources.items():
        ids = sorted((d["doc_id"] for d in src["documents"]), key=_rank)
        n = len(ids)
        n_test = max(1, round(n * SPLIT_FRACTIONS["test"]))
        n_val = max(1, round(n * SPLIT_FRACTIONS["validation"]))
        for i, doc_id in enumerate(ids):
            split = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            rows.append((doc_id, topic, split))
    return sorted(rows)


def write_export(path: Path, fmt: str, encoding: str, records: list[dict]) -> None:
    if fmt == "json":
        text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    elif fmt == "json-records":
        meta = {"system": "누리위키 문서 내보내기", "exported_at": "2026-09-30T18:00:00+09:00",
                "count": len(records)}
        text = json.dumps({"export": meta, "records": records}, ensure_ascii=False, indent=1) + "\n"
    elif fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RAW_FIELDS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(records)
        text = buf.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError as err:  # fix the source text rather than lose characters
        sys.exit(f"{path.name}: cannot encode {text[err.start:err.end]!r} as {encoding}")
    path.write_bytes(data)


# --- the dirty export --------------------------------------------------------------------------
def _dirty_records(clean: list[dict], rng: random.Random) -> list[tuple[str, str, str]]:
    """Return (line text, defect kind, expected outcome) triples; outcomes are documented in README."""
    pool = [dict(r) for r in clean]
    rng.shuffle(pool)
    take = iter(pool)
    lines: list[tuple[str, str, str]] = []
    counter = iter(range(1, 10_000))

    def emit(rec: dict, kind: str, outcome: str) -> None:
        rec = dict(rec)
        rec["id"] = f"dirty-{next(counter):04d}"
        lines.append((json.dumps(rec, ensure_ascii=False), kind, outcome))

    fields = ["q", "doc", "a"]
    canon = {"q": "question", "doc": "context", "a": "answer"}
    for i in range(6):
        r = dict(next(take)); r.pop(fields[i % 3])
        emit(r, "missing_field", f"rejected:missing_field:{canon[fields[i % 3]]}")
    wrong = [("a", 15), ("q", ["연차는 며칠인가요?"]), ("doc", {"text": "본문"}), ("a", True),
             ("q", 3.14), ("doc", [1, 2, 3])]
    for field, value in wrong:
        r = dict(next(take)); r[field] = value
        emit(r, "wrong_type", f"rejected:wrong_type:{canon[field]}")
    empties = [("a", ""), ("q", "   "), ("doc", "\n\t "), ("a", None), ("q", None), ("doc", "")]
    for field, value in empties:
        r = dict(next(take)); r[field] = value
        emit(r, "empty", f"rejected:empty:{canon[field]}")
    shorts = [("a", "네."), ("q", "휴가?"), ("a", "15일"), ("q", "VPN?"), ("a", "없음")]
    for field, value in shorts:
        r = dict(next(take)); r[field] = value
        emit(r, "too_short", f"rejected:too_short:{canon[field]}")
    for i in range(5):
        r = dict(next(take))
        filler = " ".join(x["doc"] for x in pool[100 + 8 * i: 108 + 8 * i])
        r["doc"] = r["doc"] + " " + filler  # > 2048 characters
        emit(r, "too_long", "rejected:too_long:context")
    for i in range(6):
        emit(dict(pool[200 + i]), "exact_duplicate", "rejected:duplicate")
    edits = [lambda s: s.replace("?", " ?"), lambda s: s.replace("요?", "요??"),
             lambda s: "혹시 " + s, lambda s: s.replace("나요", "나요 "), lambda s: s + " 알려주세요.",
             lambda s: s.rstrip("?") + "인지 궁금합니다."]
    for i, edit in enumerate(edits):
        r = dict(pool[220 + i]); r["q"] = edit(r["q"])
        emit(r, "near_duplicate", "kept:near_duplicate")
    for i in range(6):
        r = dict(next(take))
        for f in fields:
            r[f] = unicodedata.normalize("NFD", r[f])
        emit(r, "nfd_hangul", "rejected:duplicate:after unicode_nfc")
    ctrl = ["\x00", "\x07", "\u200b", "\x1b[0m", "\x0c", "\ufffe"]
    for i, c in enumerate(ctrl):
        r = dict(next(take)); words = r["q"].split(" ")
        words.insert(1, c); r["q"] = " ".join(words); r["a"] = r["a"] + c
        emit(r, "control_chars", "rejected:duplicate:after control_chars")
    # an HTML-escaped copy of a record (web export): identical once the entities are unescaped
    ents = [(" ", "&nbsp;"), ("'", "&#39;"), (",", "&#44;"), (".", "&#46;"), ("(", "&#40;"), (" ", "&#32;")]
    for ch, e in ents:
        r = dict(next(take))
        while ch not in r["a"]:
            r = dict(next(take))
        r["a"] = r["a"].replace(ch, e)
        r["doc"] = r["doc"].replace(" ", "&nbsp;", 3)
        emit(r, "html_entities", "rejected:duplicate:after html_entities")
    for i in range(6):
        r = dict(next(take))
        r[fields[i % 3]] = "\ufeff" + r[fields[i % 3]]
        emit(r, "bom_in_field", "rejected:duplicate:after bom")
    fw = str.maketrans({"?": "？", "(": "（", ")": "）", ",": "，", "1": "１", "0": "０", ":": "："})
    for i in range(6):
        r = dict(next(take)); r["q"] = r["q"].translate(fw); r["a"] = r["a"].translate(fw)
        emit(r, "fullwidth", "rejected:duplicate:after fullwidth")
    pii = ["연락처 010-2345-6789로 문의했습니다.", "담당자 메일 kim.minsu@example.com 으로 보냈습니다.",
           "주민등록번호 900101-1234567 확인 후 처리합니다.", "카드번호 1234-5678-9012-3456 로 결제했습니다.",
           "환불 계좌 123-456789-01-234 (국민) 입니다.", "휴대폰 01098765432 로 연락 주세요."]
    for s in pii:
        r = dict(next(take)); r["doc"] = r["doc"] + " " + s
        emit(r, "pii", "kept:pii")
    malformed = [
        '{"id": "dirty-m01", "q": "연차는 며칠인가요?", "doc": "연차 규정", "a": "15일"',
        "{'id': 'dirty-m02', 'q': '작은따옴표 JSON', 'doc': '문서', 'a': '답변입니다'}",
        '{"id": "dirty-m03", "q": "끝에 쉼표", "doc": "문서 본문입니다", "a": "답변입니다",}',
        'id,q,doc,a',
        '"그냥 문자열 한 줄"',
        '[1, 2, 3]',
    ]
    expected = ["malformed_json", "malformed_json", "malformed_json", "malformed_json", "not_an_object",
                "not_an_object"]
    for m, code in zip(malformed, expected):
        lines.append((m, "malformed_json", f"rejected:{code}"))
    return lines


def build_dirty(clean: list[dict], out_dir: Path) -> None:
    rng = random.Random(20261128)
    lines = _dirty_records(clean, rng)
    order = list(range(len(lines)))
    rng.shuffle(order)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = "\n".join(lines[i][0] for i in order) + "\n"
    (out_dir / "dirty_export.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # file BOM
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "kind", "expected"])
    for line_no, i in enumerate(order, start=1):
        w.writerow([line_no, lines[i][1], lines[i][2]])
    (out_dir.parent / "dirty_manifest.csv").write_text(buf.getvalue(), encoding="utf-8")


def build_clinic(src: dict, path: Path) -> None:
    docs = {d["doc_id"]: d for d in src["documents"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = list(CLINIC_COLUMNS.values())
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for q in src["qa"]:
        d = docs[q["doc_id"]]
        row = {"id": q["id"], "doc_id": q["doc_id"], "topic": d["category"], "title": d["title"],
               "doc": d["text"], "q": q["q"], "a": q["a"], "cot": q["cot"]}
        w.writerow({CLINIC_COLUMNS[k]: v for k, v in row.items()})
    path.write_text(buf.getvalue(), encoding="utf-8")


def main(out_root: Path = ROOT) -> None:
    sources = load_sources()
    clinic = sources.pop("clinic")
    raw_dir = out_root / "data" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    all_clean: list[dict] = []
    for topic, src in sources.items():
        name, fmt, enc = EXPORTS[topic]
        recs = raw_records(src)
        all_clean.extend(recs)
        write_export(raw_dir / name, fmt, enc, recs)
    splits = assign_splits(sources)
    with open(out_root / "data" / "splits.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["doc_id", "topic", "split"])
        w.writerows(splits)
    split_of = {r[0]: r[2] for r in splits}
    train_only = [r for r in all_clean if split_of[r["doc_id"]] == "train"]
    build_dirty(train_only, out_root / "data" / "dirty")
    build_clinic(clinic, out_root / "data" / "custom" / "clinic_faq.csv")
    print(f"wrote {len(all_clean)} clean records, dirty export, splits and clinic set under {out_root / 'data'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
