"""`workshop` command: check, prepare, quality, train, evaluate, run, export, bench."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cfg(args):
    from .config import load_config

    overrides = {}
    if getattr(args, "model", None):
        overrides["model.model_id"] = args.model
    if getattr(args, "max_steps", None) is not None:
        overrides["train.max_steps"] = args.max_steps
    if getattr(args, "report_to", None):
        overrides["train.report_to"] = ["tensorboard", *args.report_to]  # TensorBoard always stays
    return load_config(size=getattr(args, "size", None), **overrides)


def _trackers(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in ("wandb", "trackio", "tensorboard")]
    if bad:
        raise argparse.ArgumentTypeError(f"알 수 없는 로깅 대상 {bad} (가능: wandb, trackio)")
    return [t for t in names if t != "tensorboard"]


def cmd_check(args) -> int:
    from .env import checklist

    items = checklist(model_id=args.model, check_model_access=not args.no_model_access)
    for it in items:
        print(it.line())
    blocking = [it for it in items if it.blocking and not it.ok]
    print(f"\n{len(items) - sum(not i.ok for i in items)}/{len(items)} 통과"
          + (f", 차단 항목 {len(blocking)}개 (blocking failures)" if blocking else ""))
    return 1 if blocking else 0


def cmd_prepare(args) -> int:
    from .config import load_config
    from .data import prepare

    cfg = load_config(size=args.size)
    mapping = json.loads(args.mapping) if args.mapping else None
    try:
        res = prepare(args.raw, args.out, cfg.data, mapping=mapping,
                      splits_file=args.splits if args.splits else "default")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    s = res.summary
    print(f"read={s['read']} kept={s['kept']} rejected={s['rejected']}")
    for reason, n in s["by_reason"].items():
        print(f"  rejected {reason}: {n}")
    print(f"splits: {s['splits']}  ({s['documents']} documents)")
    print(f"wrote {Path(args.out) / 'prepare_summary.json'}, rejects: {Path(args.out) / 'rejects.jsonl'}")
    return 0


def cmd_quality(args) -> int:
    from .config import load_config
    from .data import read_jsonl
    from .data.prepare import ensure_prepared
    from .models import load_tokenizer, model_path, resolve_model
    from .quality import check_quality, write_quality_report

    cfg = load_config(size=args.size)
    data = Path(args.data) if args.data else ensure_prepared(cfg)
    records = read_jsonl(data / f"{args.split}.jsonl")
    tok = load_tokenizer(model_path(resolve_model(cfg.model)))
    rep = check_quality(records, tok, embedding_sample=args.embedding_sample)
    files = write_quality_report(rep, records, args.out, rep.token_counts)
    print(json.dumps(rep.summary(), ensure_ascii=False, indent=1, default=str))
    for k, p in files.items():
        print(f"{k}: {p}")
    return 0


def cmd_train(args) -> int:
    from .data.prepare import load_splits
    from .distributed import is_main_process, main_process_first
    from .models import load_model
    from .pipeline import banner
    from .training import train

    cfg = _cfg(args)
    banner(cfg)
    loaded = load_model(cfg.model)
    with main_process_first():  # rank 0 prepares the data (if needed) before the others read it
        splits = load_splits(cfg)
    _, res = train(loaded.model, loaded.tokenizer, splits, cfg, resume=args.resume)
    if is_main_process():
        print(json.dumps(res.summary(), ensure_ascii=False, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    from peft import PeftModel

    from .models import load_model
    from .pipeline import banner, evaluate_adapter

    cfg = _cfg(args)
    if args.num_examples is not None:
        cfg.eval.num_examples = args.num_examples
    banner(cfg)
    loaded = load_model(cfg.model)
    adapter = Path(args.adapter or cfg.run_dir / "adapter")
    if not (adapter / "adapter_config.json").exists():
        print(f"error: 어댑터가 없습니다 (no adapter_config.json in {adapter}); 먼저 `workshop train`", file=sys.stderr)
        return 2
    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    out = Path(args.out or cfg.build_path / "eval")
    res, files = evaluate_adapter(model, loaded.tokenizer, cfg, out)
    print(res.settings_table().to_string(index=False))
    for k, p in files.items():
        print(f"{k}: {p}")
    return 0


def cmd_run(args) -> int:
    from .pipeline import run

    run(_cfg(args))
    return 0


def cmd_export(args) -> int:
    from .export import AdapterError, ExportError, export_gguf

    try:
        res = export_gguf(args.adapter, quant=args.quant, out_dir=args.out, base=args.base, overwrite=args.overwrite)
    except AdapterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(res.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="workshop", description="QLoRA/RAFT 워크숍 명령어")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check", help="실습 환경 점검 (exit 1 if a blocking item fails)")
    c.add_argument("--model", default=None)
    c.add_argument("--no-model-access", action="store_true", help="허브의 모델 접근 권한 확인을 건너뜀")
    c.set_defaults(fn=cmd_check)

    c = sub.add_parser("prepare", help="원본 데이터 검증·정규화·RAFT 변환")
    c.add_argument("--raw", nargs="+", required=True, help="원본 파일 또는 폴더 (여러 개 가능)")
    c.add_argument("--out", required=True)
    c.add_argument("--mapping", help='열 이름 매핑 JSON, 예: \'{"question": "문의내용", "context": "참고문서", "answer": "답변"}\'')
    c.add_argument("--splits", help="문서별 분할 CSV (doc_id,split); 없으면 결정적 해시 분할")
    c.add_argument("--size", default=None)
    c.set_defaults(fn=cmd_prepare)

    c = sub.add_parser("quality", help="데이터 품질 점검 보고서")
    c.add_argument("--data", default=None, help="prepare 출력 폴더 (기본: build/data, 없으면 만듦)")
    c.add_argument("--split", default="train", choices=["train", "validation", "test"])
    c.add_argument("--out", default="build/quality")
    c.add_argument("--embedding-sample", type=int, default=200)
    c.add_argument("--size", default=None)
    c.set_defaults(fn=cmd_quality)

    for name, fn, hlp in (("train", cmd_train, "QLoRA 학습"), ("evaluate", cmd_evaluate, "원본 vs 튜닝 평가"),
                          ("run", cmd_run, "전체 파이프라인 (make run)")):
        c = sub.add_parser(name, help=hlp)
        c.add_argument("--size", choices=["full", "smoke", "tiny"], default=None)
        c.add_argument("--model", default=None, help="모델 ID/경로 (기본: auto)")
        c.add_argument("--max-steps", type=int, default=None)
        if name in ("train", "run"):
            c.add_argument("--report-to", type=_trackers, default=None,
                           help="TensorBoard에 더해 기록할 곳: wandb, trackio (쉼표로 여러 개, 설치된 것만 쓰임)")
        if name == "train":
            c.add_argument("--resume", default="auto", help="auto | true | false | 체크포인트 경로")
        if name == "evaluate":
            c.add_argument("--adapter", default=None)
            c.add_argument("--split", default="test", choices=["test"])
            c.add_argument("--out", default=None)
            c.add_argument("--num-examples", type=int, default=None)
        c.set_defaults(fn=fn)

    c = sub.add_parser("export", help="어댑터를 원본에 병합해 GGUF 파일(llama.cpp·Ollama)과 Ollama Modelfile로 내보내기")
    c.add_argument("--adapter", required=True, help="어댑터 폴더 (adapter_config.json이 있는 곳, 예: build/runs/<이름>/adapter)")
    c.add_argument("--format", default="gguf", choices=["gguf"], help="내보낼 형식 (지금은 gguf만)")
    c.add_argument("--quant", default="f16", choices=["f16", "q8_0"],
                   help="f16: 병합한 가중치 그대로(16비트) | q8_0: 8비트 블록 양자화 (크기 약 절반)")
    c.add_argument("--out", default=None, help="출력 폴더 (기본: 어댑터 옆의 gguf-<quant>/)")
    c.add_argument("--base", default=None,
                   help="원본 모델 경로·Hub ID (기본: adapter_config.json의 base_model_name_or_path, 오프라인 모델은 offline)")
    c.add_argument("--overwrite", action="store_true", help="이미 있는 GGUF·Modelfile을 다시 씀")
    c.set_defaults(fn=cmd_export)

    from . import bench

    c = sub.add_parser("bench", help="학습 레시피 속도·메모리 측정 (GPU; CPU는 작은 모양으로 자체 점검)",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(c)
    c.set_defaults(fn=bench.run_from_args)

    args = p.parse_args(argv)
    if getattr(args, "resume", None) in ("true", "false"):
        args.resume = args.resume == "true"
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
