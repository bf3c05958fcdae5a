"""`workshop` command: check, prefetch, assign-gpus, prepare, quality, train, evaluate, run, ablate, export, bench.

Every setting of config.py is a flag (`--train.learning_rate 1e-4`, `workshop train --help` lists them with
their help text) and can come from a YAML file (`--config run.yaml`); a flag beats the file, which beats a
WORKSHOP_* variable, which beats the size preset. Mistakes a participant can fix (a bad value, a missing
path, a data folder of other sources, a folder that is not an adapter) end with one Korean line on stderr
and exit code 2, never a traceback. Start-up stays torch-free: commands import the library inside.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import bench
from .config import SECTIONS, SIZES, ConfigError, WorkshopConfig, load_config
from .runtime.errors import WorkshopError
from .runtime.paths import project_root

SHORTCUTS = {"size": "size", "model": "model.model_id", "max_steps": "train.max_steps", "build_dir": "build_dir",
             "data": "data_dir", "report_to": "train.report_to"}
SECTION_TITLES = {"model": "모델 설정 (model)", "data": "데이터 설정 (data)", "lora": "LoRA 설정 (lora)",
                  "train": "학습 설정 (train)", "eval": "평가 설정 (eval)"}


def add_config_arguments(p: argparse.ArgumentParser, sections: tuple[str, ...] = SECTIONS) -> None:
    """--config, the shortcuts (--size, --model, --max-steps, --build-dir, --data) and one flag per setting."""
    g = p.add_argument_group("설정 (config)")
    g.add_argument("--config", default=None, help="설정 YAML 파일 (실행마다 <run>/config.yaml로 저장됨)")
    g.add_argument("--size", default=argparse.SUPPRESS, help="실행 규모: " + " | ".join(SIZES))
    g.add_argument("--model", default=argparse.SUPPRESS, help="모델 ID/경로, offline, random:exaone[:...] (model.model_id)")
    g.add_argument("--max-steps", dest="max_steps", default=argparse.SUPPRESS, help="학습 스텝 수 (train.max_steps)")
    g.add_argument("--build-dir", dest="build_dir", default=argparse.SUPPRESS, help="산출물 폴더 (build_dir)")
    g.add_argument("--report-to", dest="report_to", default=argparse.SUPPRESS, type=_trackers,
                   help="TensorBoard 말고 더 기록할 곳: wandb, trackio (쉼표로; TensorBoard는 항상 남음)")
    g.add_argument("--data", default=argparse.SUPPRESS,
                   help="준비된 데이터 폴더 (workshop prepare --out의 폴더; data_dir). 주면 그 데이터를 그대로 씀")
    default = WorkshopConfig()
    for s in sections:
        g = p.add_argument_group(SECTION_TITLES[s])
        for f in dataclasses.fields(getattr(default, s)):
            text = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                text += f" [{' | '.join(map(str, f.metadata['choices']))}]"
            g.add_argument(f"--{s}.{f.name}", dest=f"cfg.{s}.{f.name}", default=argparse.SUPPRESS, metavar="값",
                           help=f"{text} (기본 {getattr(getattr(default, s), f.name)!r})".replace("%", "%%"))


def _trackers(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in ("wandb", "trackio", "tensorboard")]
    if bad:
        raise argparse.ArgumentTypeError(f"알 수 없는 로깅 대상 {bad} (가능: wandb, trackio)")
    return ["tensorboard", *(t for t in names if t != "tensorboard")]  # TensorBoard always stays


def config_from_args(args: argparse.Namespace) -> WorkshopConfig:
    """The config of a command: its flags (named '명령줄') over --config over the environment over the size."""
    overrides = {}
    for key, value in vars(args).items():
        if key.startswith("cfg."):
            overrides[key[4:]] = value
        elif key in SHORTCUTS:
            overrides[SHORTCUTS[key]] = value
    size = overrides.pop("size", None)
    return load_config(size=size, config_file=args.config, overrides=overrides, source="명령줄 (CLI)")


def _check_dir(path: str, what: str) -> Path:
    """The path as given (from the working folder) or, like the data loader does, from the project root: the
    notebooks call the CLI from main-practice/ with the config's project-relative paths such as data/raw."""
    p = Path(path).expanduser()
    if not p.exists() and not p.is_absolute() and (project_root() / p).exists():
        p = project_root() / p
    if not p.exists():
        raise WorkshopError(f"{what} 경로가 없습니다 (no such path): {p}")
    return p


# --- commands -----------------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from .config import EXAONE_MODEL_ID
    from .runtime.checklist import checklist

    cfg = config_from_args(args)
    model_id = EXAONE_MODEL_ID if cfg.model.model_id == "auto" else cfg.model.model_id
    items = checklist(model_id=model_id, check_model_access=not args.no_model_access,
                      memory_budget_gib=cfg.train.memory_budget_gib, build_dir=cfg.build_path,
                      build_dir_source=cfg.sources.get("build_dir", "기본값"))
    for it in items:
        print(it.line())
    blocking = [it for it in items if it.blocking and not it.ok]
    print(f"\n{len(items) - sum(not i.ok for i in items)}/{len(items)} 통과"
          + (f", 차단 항목 {len(blocking)}개 (blocking failures)" if blocking else ""))
    return 1 if blocking else 0


def cmd_prepare(args) -> int:
    from .data.prepare import NothingKeptError, prepare

    cfg = config_from_args(args)
    for raw in args.raw:
        _check_dir(raw, "원본 데이터 (--raw)")
    mapping = None
    if args.mapping:
        try:
            mapping = json.loads(args.mapping)
        except json.JSONDecodeError as err:
            raise WorkshopError(f"--mapping이 올바른 JSON이 아닙니다 ({err.msg}, {err.pos + 1}번째 글자): "
                                f"예: '{{\"question\": \"문의내용\", \"context\": \"참고문서\", \"answer\": \"답변\"}}'") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise WorkshopError("--mapping은 {\"표준 필드\": \"내 열 이름\"} 형태의 JSON 객체여야 합니다")
    if args.splits:
        _check_dir(args.splits, "분할 파일 (--splits)")
    try:
        res = prepare(args.raw, args.out, cfg.data, mapping=mapping, splits_file=args.splits or "default",
                      overwrite=args.overwrite)
    except NothingKeptError as err:
        print(f"오류: {err}", file=sys.stderr)
        for reason, n in err.by_reason.items():
            print(f"  rejected {reason}: {n}", file=sys.stderr)
        return 1
    s = res.summary
    print(f"read={s['read']} kept={s['kept']} rejected={s['rejected']}")
    for reason, n in s["by_reason"].items():
        print(f"  rejected {reason}: {n}")
    print(f"splits: {s['splits']}  ({s['documents']} documents)")
    print(f"wrote {Path(args.out)} (manifest.json, rejects.jsonl); 학습: workshop train --data {args.out}")
    return 0


def cmd_quality(args) -> int:
    from .data.jsonl import read_jsonl
    from .data.prepare import ensure_prepared
    from .data.quality.checks import check_quality
    from .model.choice import resolve_model
    from .model.load import load_tokenizer, model_path
    from .report.quality_report import write_quality_report

    cfg = config_from_args(args)
    data = ensure_prepared(cfg)
    records = read_jsonl(data / f"{args.split}.jsonl")
    if not records:
        raise WorkshopError(f"{data / (args.split + '.jsonl')}이 비어 있습니다: 점검할 예제가 없습니다")
    tok = load_tokenizer(model_path(resolve_model(cfg.model), settings=cfg.model))
    rep = check_quality(records, tok, embedding_sample=args.embedding_sample)
    files = write_quality_report(rep, records, args.out, rep.token_counts)
    print(json.dumps(rep.summary(), ensure_ascii=False, indent=1, default=str))
    for k, p in files.items():
        print(f"{k}: {p}")
    return 0


def _splits_with_training_data(cfg):
    from .data.prepare import data_dir, load_splits

    splits = load_splits(cfg)
    if not splits["train"]:
        raise WorkshopError(f"{data_dir(cfg) / 'train.jsonl'}에 학습 예제가 없습니다: 문서가 너무 적으면 모두 "
                            "검증/테스트로 갈 수 있습니다 (splits 파일이나 데이터를 확인하세요)")
    return splits


def cmd_train(args) -> int:
    from .model.load import load_model
    from .pipeline import banner
    from .runtime.distributed import is_main_process, main_process_first
    from .train.trainer import train

    cfg = config_from_args(args)
    banner(cfg)
    with main_process_first():  # rank 0 prepares the data (if needed) before the others read it
        splits = _splits_with_training_data(cfg)
    loaded = load_model(cfg.model)
    _, res = train(loaded.model, loaded.tokenizer, splits, cfg, resume=args.resume, run_name=args.run,
                   overwrite=args.overwrite)
    if is_main_process():
        print(json.dumps(res.summary(), ensure_ascii=False, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    from peft import PeftModel

    from .data.prepare import load_splits
    from .evaluate.runner import evaluate_adapter
    from .model.load import load_model
    from .pipeline import banner
    from .report.plots import save_eval_plots
    from .train.runs import completed_run

    cfg = config_from_args(args)
    if args.num_examples is not None:
        cfg.eval.num_examples = args.num_examples
    if args.adapter:
        adapter = _check_dir(args.adapter, "어댑터 (--adapter)")
        if not (adapter / "adapter_config.json").is_file():
            raise WorkshopError(f"{adapter}는 LoRA 어댑터 폴더가 아닙니다 (adapter_config.json 없음): "
                                "학습한 실행의 <run>/adapter 폴더를 주세요")
    else:
        run = completed_run(cfg)
        if run is None:
            raise WorkshopError(f"{cfg.runs_dir}에 끝난 학습 실행이 없습니다: 먼저 workshop train, 또는 --adapter로 지정")
        adapter = run.path / "adapter"
    if not load_splits(cfg)["test"]:
        raise WorkshopError("테스트 분할이 비어 있어 평가할 예제가 없습니다 (test.jsonl)")
    banner(cfg)
    print(f"[evaluate] 어댑터 adapter: {adapter}")
    loaded = load_model(cfg.model)
    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    out = Path(args.out) if args.out else adapter.parent / "eval"
    res, files = evaluate_adapter(model, loaded.tokenizer, cfg, out)
    files.update(save_eval_plots(res.metrics, out))
    print(res.settings_table().to_string(index=False))
    for k, p in files.items():
        print(f"{k}: {p}")
    return 0


def cmd_prefetch(args) -> int:
    from .config import EXAONE_MODEL_ID, default_cache_dir
    from .data.embeddings import MULTILINGUAL_EMBEDDING
    from .model.sources import offline_model_dir
    from .runtime.hub import hf_token
    from .runtime.paths import cache_dir
    from .runtime.server import prefetch_models

    models = args.model or [EXAONE_MODEL_ID, MULTILINGUAL_EMBEDDING]
    try:
        prefetch_models(models, token=hf_token())
    except RuntimeError as err:
        raise WorkshopError(str(err)) from None
    if not args.no_offline:
        print(f"[prefetch] 오프라인 모델(CPU 대체) 변환 → {cache_dir(default_cache_dir())}")
        offline_model_dir()
    print("[prefetch] 끝: 참가자는 같은 HF_HOME(과 WORKSHOP_CACHE)을 쓰면 다시 받지 않습니다 (docs/server.md)")
    return 0


def cmd_assign_gpus(args) -> int:
    from .runtime.server import assign_gpus, assignment_table, people_per_gpu, read_users

    users = read_users(_check_dir(args.users, "참가자 목록"))
    gpus, per_gpu = args.gpus, args.per_gpu
    if gpus is None or per_gpu is None:
        import torch

        if not torch.cuda.is_available():
            raise WorkshopError("CUDA GPU가 보이지 않습니다: --gpus와 --per-gpu를 지정하세요")
        gpus = gpus or torch.cuda.device_count()
        smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(gpus)) / 1024**3
        per_gpu = per_gpu or people_per_gpu(smallest)
    try:
        table = assignment_table(assign_gpus(users, gpus, per_gpu))
    except ValueError as err:
        raise WorkshopError(str(err)) from None
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            raise WorkshopError(f"{out}이(가) 이미 있습니다: 덮어쓰려면 --force")
        out.write_text(table)
        print(f"{len(users)}명 → GPU {gpus}장 (한 장에 최대 {per_gpu}명): {out}")
    else:
        print(table, end="")
    return 0


def cmd_run(args) -> int:
    from .pipeline import run

    run(config_from_args(args), resume=args.resume, run_name=args.run, overwrite=args.overwrite)
    return 0


def cmd_ablate(args) -> int:
    from .ablation import AblationPlan, check_out_dir, run_ablation
    from .pipeline import banner

    cfg = config_from_args(args)
    kw = {"seeds": tuple(args.seeds)} if args.seeds else {}
    if args.num_examples is not None:
        if args.num_examples < 0:
            raise WorkshopError(f"--num-examples는 0 이상이어야 합니다: {args.num_examples}")
        kw["num_examples"] = args.num_examples
    if cfg.sources.get("train.max_steps") == "명령줄 (CLI)":
        kw["max_steps"] = cfg.train.max_steps  # the flag beats the size's plan
    plan = AblationPlan.for_size(cfg.size, metric=args.metric, **kw)
    plan.validate()
    out = Path(args.out) if args.out else cfg.build_path / "ablation"
    check_out_dir(out.resolve())
    banner(cfg)
    res = run_ablation(cfg, plan, out)
    print()
    print(res.markdown())
    print()
    print(res.verdict())
    print(f"\n결과: {out / 'ablation.md'}, {out / 'ablation.json'}, {out / 'ablation.png'}")
    return 0


def cmd_export(args) -> int:
    from .report.export import export_gguf

    res = export_gguf(args.adapter, quant=args.quant, out_dir=args.out, base=args.base, overwrite=args.overwrite)
    print(res.describe())
    return 0


def _resume(value: str) -> bool | str:
    return {"true": True, "false": False}.get(value.lower(), value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workshop", description="QLoRA/RAFT 워크숍 명령어")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check", help="실습 환경 점검 (exit 1 if a blocking item fails)")
    c.add_argument("--no-model-access", action="store_true", help="허브의 모델 접근 권한 확인을 건너뜀")
    add_config_arguments(c, ("model", "train"))
    c.set_defaults(fn=cmd_check)

    c = sub.add_parser("prefetch", help="강사용: 모델을 공유 캐시(HF_HOME)에 한 번 받아 둠 (docs/server.md)")
    c.add_argument("--model", action="append", help="받을 모델 ID (여러 번; 기본: EXAONE + 다국어 임베딩 모델)")
    c.add_argument("--no-offline", action="store_true", help="오프라인 모델(SmolLM2) 변환은 건너뜀")
    c.set_defaults(fn=cmd_prefetch)

    c = sub.add_parser("assign-gpus", help="강사용: 참가자마다 GPU 배정표 (user<TAB>gpu) 만들기")
    c.add_argument("users", help="참가자 계정 목록 파일 (한 줄에 하나)")
    c.add_argument("--gpus", type=int, default=None, help="GPU 수 (기본: 보이는 GPU 전부)")
    c.add_argument("--per-gpu", type=int, default=None, help="GPU 한 장의 최대 인원 (기본: 메모리 / 12 GiB)")
    c.add_argument("--out", default=None, help="배정표 파일 (기본: 화면에 출력)")
    c.add_argument("--force", action="store_true", help="--out 파일이 있으면 덮어씀")
    c.set_defaults(fn=cmd_assign_gpus)

    c = sub.add_parser("prepare", help="원본 데이터 검증·정규화·RAFT 변환 -> 준비된 데이터 폴더")
    c.add_argument("--raw", nargs="+", required=True, help="원본 파일 또는 폴더 (여러 개 가능)")
    c.add_argument("--out", required=True, help="준비된 데이터를 쓸 폴더 (다른 원본의 데이터가 있으면 --overwrite 필요)")
    c.add_argument("--mapping", help='열 이름 매핑 JSON, 예: \'{"question": "문의내용", "context": "참고문서", '
                                     '"answer": "답변"}\'')
    c.add_argument("--splits", help="문서별 분할 CSV (doc_id,split); 없으면 결정적 해시 분할")
    c.add_argument("--overwrite", action="store_true", help="다른 원본으로 만든 폴더도 바꿈")
    add_config_arguments(c, ("data",))
    c.set_defaults(fn=cmd_prepare)

    c = sub.add_parser("quality", help="데이터 품질 점검 보고서")
    c.add_argument("--split", default="train", choices=["train", "validation", "test"])
    c.add_argument("--out", default="build/quality")
    c.add_argument("--embedding-sample", type=int, default=200)
    add_config_arguments(c)
    c.set_defaults(fn=cmd_quality)

    for name, fn, hlp in (("train", cmd_train, "QLoRA 학습 (실행마다 새 폴더)"),
                          ("run", cmd_run, "전체 파이프라인 (make run): 준비 -> 학습 -> 평가 -> 보고서")):
        c = sub.add_parser(name, help=hlp)
        c.add_argument("--resume", type=_resume, default="auto" if name == "train" else False,
                       help="auto(같은 데이터·설정의 끝나지 않은 실행을 이어 감) | true | false | 체크포인트 경로")
        c.add_argument("--run", default=None, help="실행 폴더 이름 (기본: <시각>-<식별값>)")
        c.add_argument("--overwrite", action="store_true", help="--run으로 지정한 기존 실행 폴더를 바꿈")
        add_config_arguments(c)
        c.set_defaults(fn=fn)

    c = sub.add_parser("ablate", help="RAFT 학습 형식 비교: 골든만 vs RAFT vs RAFT(CoT 없음), RAG top-k 평가",
                       description="같은 원본 모델·스텝·시드로 세 학습 형식을 학습하고, 원본 모델과 함께 같은 테스트 "
                                   "질문(골든만, 골든+방해, RAG top-1/3/5)으로 평가합니다 (RAFT 논문 Table 1의 비교).")
    c.add_argument("--seeds", type=int, nargs="+", default=None, help="시드들 (기본: tiny/smoke 1개, 그 외 0 1 2)")
    c.add_argument("--num-examples", type=int, default=None, help="테스트 질문 수 (0 = 전부)")
    c.add_argument("--metric", default="rougeL", help="표·그림·판정의 지표 (rougeL, rouge1, f1, bleu, exact_match)")
    c.add_argument("--out", default=None, help="출력 폴더 (기본: build/ablation)")
    add_config_arguments(c)
    c.set_defaults(fn=cmd_ablate)

    c = sub.add_parser("export", help="어댑터를 원본에 병합해 GGUF 파일(llama.cpp·Ollama)과 Ollama Modelfile로 내보내기")
    c.add_argument("--adapter", required=True, help="어댑터 폴더 (adapter_config.json이 있는 곳, 예: build/runs/<이름>/<실행>/adapter)")
    c.add_argument("--format", default="gguf", choices=["gguf"], help="내보낼 형식 (지금은 gguf만)")
    c.add_argument("--quant", default="f16", choices=["f16", "q8_0"],
                   help="f16: 병합한 가중치 그대로(16비트) | q8_0: 8비트 블록 양자화 (크기 약 절반)")
    c.add_argument("--out", default=None, help="출력 폴더 (기본: 어댑터 옆의 gguf-<quant>/)")
    c.add_argument("--base", default=None,
                   help="원본 모델 경로·Hub ID (기본: adapter_config.json의 base_model_name_or_path, 오프라인 모델은 offline)")
    c.add_argument("--overwrite", action="store_true", help="이미 있는 GGUF·Modelfile을 다시 씀")
    c.set_defaults(fn=cmd_export)

    c = sub.add_parser("evaluate", help="원본 vs 튜닝 평가")
    c.add_argument("--adapter", default=None, help="어댑터 폴더 (기본: 이 설정의 가장 최근 실행)")
    c.add_argument("--out", default=None, help="결과 폴더 (기본: <실행>/eval)")
    c.add_argument("--num-examples", type=int, default=None)
    add_config_arguments(c)
    c.set_defaults(fn=cmd_evaluate)

    c = sub.add_parser("bench", help="학습 레시피 속도·메모리 측정 (GPU; CPU는 작은 모양으로 자체 점검)",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(c)
    c.set_defaults(fn=bench.run_from_args)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (WorkshopError, ConfigError) as err:
        print(f"오류: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"오류: 파일이 없습니다 (file not found): {err.filename or err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"오류: 권한이 없습니다 (permission denied): {err.filename or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("중단했습니다 (interrupted).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
