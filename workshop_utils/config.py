"""One configuration object for the whole workshop, self-documenting like peft's LoraConfig.

Every knob is a dataclass field with a Korean help text (`metadata={"help": ...}`), so a notebook can
print the table of settings (`describe(cfg.lora)`). GPU defaults are the seed's values; the "smoke"
and "tiny" sizes shrink the run so that it finishes on 2 CPU cores (make run / CI).

Environment overrides (read by `load_config`):
  WORKSHOP_MODEL       model id or local path (default: EXAONE on CUDA, the offline model otherwise)
  WORKSHOP_SIZE        full | smoke | tiny   (default: full on CUDA, smoke on CPU)
  WORKSHOP_BUILD_DIR   where artifacts go (default: <project>/build)
  WORKSHOP_MAX_STEPS   override the number of optimizer steps
  WORKSHOP_EMBEDDING   sentence-embedding model for cosine ('none' skips cosine)
  WORKSHOP_KO_TOKENIZER  mecab (default) | whitespace (see text.tokenizer_mode)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAONE_MODEL_ID = "LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct"
OFFLINE_MODEL_ID = "offline:smollm2-135m-instruct"
SIZES = ("full", "smoke", "tiny")

RAFT_INSTRUCTION = (
    "다음 문맥을 읽고 질문에 답하세요. 여러 문맥이 주어질 수 있으며, 그 중 질문에 답하기 위한 "
    "가장 적절한 정보를 찾아 활용해야 합니다."
)
NO_ANSWER_TEXT = "제공된 문맥에서는 질문에 대한 답을 찾을 수 없습니다."


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class ModelSettings:
    model_id: str = _help("모델 ID 또는 로컬 경로. 'auto'면 CUDA에서는 EXAONE, 아니면 오프라인 모델", "auto")
    load_in_4bit: bool = _help("4비트(QLoRA) 양자화로 로드할지 여부", True)
    quant_type: str = _help("4비트 양자화 형식: nf4(정규분포 가중치에 최적) 또는 fp4", "nf4")
    double_quant: bool = _help("양자화 상수(absmax)를 한 번 더 양자화 (파라미터당 약 0.37비트 절약)", True)
    compute_dtype: str = _help("연산 dtype: auto | bfloat16 | float16 | float32 (auto는 장치에 맞게 선택)", "auto")
    trust_remote_code: bool = _help("허브의 모델 코드를 실행할지. transformers 5는 EXAONE을 기본 지원하므로 False", False)
    attn_implementation: str = _help("어텐션 구현: auto | sdpa | eager | workshop_varlen | flex_attention", "auto")
    max_seq_length: int = _help("학습/평가 시퀀스 최대 토큰 수 (02 노트북의 길이 분포로 정함)", 2048)


@dataclass
class DataSettings:
    raw_paths: list = _help("원본 데이터 파일/폴더 목록 (프로젝트 기준 상대 경로 가능)", ["data/raw"])
    splits_file: str = _help("문서별 고정 분할 파일 (doc_id,split). 없으면 문서 해시로 결정적 분할", "data/splits.csv")
    min_length: int = _help("텍스트 최소 길이(문자). 시드 슬라이드의 5", 5)
    max_length: int = _help("텍스트 최대 길이(문자). 시드 슬라이드의 2048", 2048)
    instruction: str = _help("RAFT instruction (고정 시스템 프롬프트)", RAFT_INSTRUCTION)
    num_distractors: int = _help("골든 문서와 함께 넣을 방해(distractor) 문서 수 k (RAFT 논문 기본 4)", 4)
    hard_distractor_fraction: float = _help("방해 문서 중 어려운(같은 주제/BM25 근접) 문서의 비율", 0.5)
    hard_method: str = _help(
        "어려운 방해 문서 고르기: bm25(질문과 가장 비슷한 문서) | topic(같은 주제에서 무작위, 대용량에서 선형 시간)",
        "bm25")
    oracle_fraction: float = _help("골든 문서를 포함하는 예제 비율 P (RAFT 논문 권장 0.8)", 0.8)
    no_oracle_target: str = _help(
        "골든 문서가 빠진 예제(1-P)의 정답: abstain(문맥에 답이 없다고 답함) | answer(논문처럼 원래 답 유지)",
        "abstain")
    max_context_len: int = _help(
        "문서 하나의 최대 길이(문자). 넘으면 근거 문장을 남기고 자름. 토큰 한도는 max_seq_length", 2048)
    add_cot: bool = _help("정답 대신 CoT(##begin_quote## 인용 + <ANSWER>:)를 학습 목표로 쓸지", True)
    validation_fraction: float = _help("splits_file이 없을 때 검증 세트 비율", 0.1)
    test_fraction: float = _help("splits_file이 없을 때 테스트 세트 비율", 0.1)
    seed: int = _help("분할·방해 문서 추출·셔플의 난수 시드", 42)


@dataclass
class LoraSettings:
    r: int = _help("저차원 행렬의 차원(rank). 클수록 표현력↑, 파라미터↑. 대부분 8~16이면 충분", 16)
    lora_alpha: int = _help("LoRA 업데이트 스케일 (실제 배율은 alpha/r). 보통 r의 2배", 32)
    lora_dropout: float = _help("LoRA 입력 드롭아웃. 데이터가 적으면 0.1 권장", 0.05)
    target_modules: list = _help("LoRA를 붙일 모듈 (어텐션 q/k/v/o 프로젝션)",
                                 ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = _help("bias 학습 여부: none | all | lora_only", "none")
    task_type: str = _help("작업 종류 (텍스트 생성 = CAUSAL_LM)", "CAUSAL_LM")


@dataclass
class TrainSettings:
    output_dir: str = _help("체크포인트/로그/어댑터 저장 경로 (build 디렉터리 기준)", "runs/exaone-qlora")
    num_train_epochs: float = _help("전체 데이터 반복 횟수. 소규모 데이터는 3~5", 3)
    max_steps: int = _help("최대 옵티마이저 스텝 (-1이면 epochs로 결정)", -1)
    per_device_train_batch_size: int = _help("장치당 학습 배치 크기", 4)
    per_device_eval_batch_size: int = _help("장치당 평가 배치 크기", 4)
    gradient_accumulation_steps: int = _help("경사 누적. 실제 배치 = batch × 누적 × GPU 수", 4)
    learning_rate: float = _help("학습률. LoRA는 전체 파인튜닝(1e-5)보다 크게 2e-4", 2e-4)
    lr_scheduler_type: str = _help("학습률 스케줄러", "cosine")
    warmup_steps: float = _help("웜업 스텝 (정수) 또는 비율 (0~1 실수)", 100)
    logging_steps: int = _help("로그 주기(스텝)", 10)
    eval_steps: int = _help("검증 주기(스텝)", 500)
    save_steps: int = _help("체크포인트 저장 주기(스텝)", 500)
    save_total_limit: int = _help("보관할 체크포인트 최대 개수", 2)
    optim: str = _help("옵티마이저. paged_adamw_8bit = 8비트 옵티마이저 상태 + 메모리 페이징", "paged_adamw_8bit")
    max_grad_norm: float = _help("그래디언트 클리핑 임계값", 0.3)
    gradient_checkpointing: str = _help(
        "활성화 체크포인팅: auto(메모리 예산으로 결정, 일부 층만도 가능) | on | off | 층 수(정수, 앞에서부터)", "auto")
    report_to: list = _help(
        "로깅 대상: tensorboard는 항상, wandb·trackio는 설치(pip install -e '.[tracking]')되어 있고 여기에 적었을 때만",
        ["tensorboard"])
    tracking_project: str = _help("trackio 프로젝트 이름: 로컬 대시보드에서 실행들을 묶는 단위", "qlora-raft-workshop")
    early_stopping_patience: int = _help("검증 loss가 개선되지 않으면 멈출 평가 횟수 (0이면 끔)", 0)
    eval_max_examples: int = _help("학습 중 검증 loss에 쓸 검증 예제 수 (0이면 전부)", 0)
    completion_only_logits: bool = _help(
        "답변 위치의 logits만 계산 (프롬프트 위치의 lm_head 계산 생략, 손실은 동일)", True)
    fast_path: str = _help(
        "GPU 고속 경로(fastpath.py): auto(CUDA에서 켬) | on | off. 아래 각 부품은 따로 끌 수 있음", "auto")
    padding_free: bool = _help("고속 경로: 패딩 없이 시퀀스를 이어 붙인 배치 (position_ids로 경계 구분)", True)
    liger_kernels: bool = _help(
        "고속 경로: Liger 커널 (rope, RMSNorm, SwiGLU, fused linear cross-entropy) -- 설치되어 있고 CUDA일 때", True)
    memory_mode: str = _help(
        "고속 경로 메모리 모드: auto | budget(예산 안에서 가장 빠르게) | 16gb(T4급: fp16, sdpa, 전체 체크포인팅)",
        "auto")
    memory_budget_gib: float = _help("고속 경로 메모리 예산 GiB (0이면 GPU 메모리의 85%)", 0.0)
    offload_vocab: str = _help(
        "고속 경로: 임베딩·lm_head(어휘 102,400 x 4,096)를 쓰지 않는 동안 CPU 메모리에 둠: auto(예산이 빠듯해 "
        "더 큰 micro-batch가 들어갈 때) | on | off", "auto")
    seed: int = _help("학습 난수 시드", 42)


@dataclass
class EvalSettings:
    settings: list = _help("평가 설정: golden_only | golden_distractors | rag_topk (RAFT 논문의 세 가지)",
                           ["golden_only", "golden_distractors", "rag_topk"])
    num_examples: int = _help("평가할 테스트 예제 수 (0이면 전부)", 0)
    max_new_tokens: int = _help("생성 최대 토큰 수", 256)
    batch_size: int = _help("배치 생성 크기 (왼쪽 패딩)", 16)
    rag_k: int = _help("RAG top-k: BM25로 검색할 문서 수", 4)
    embedding_model: str = _help(
        "코사인 유사도용 문장 임베딩 모델. auto면 허브 접속 시 다국어 모델, 오프라인이면 패키지된 영어 모델",
        "auto")


@dataclass
class WorkshopConfig:
    size: str = _help("실행 규모: full(GPU) | smoke(CPU make run) | tiny(CI 노트북)", "full")
    build_dir: str = _help("산출물 폴더", "build")
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def build_path(self) -> Path:
        from .paths import project_root

        p = Path(self.build_dir)
        return p if p.is_absolute() else project_root() / p

    @property
    def run_dir(self) -> Path:
        p = Path(self.train.output_dir)
        return p if p.is_absolute() else self.build_path / p


# Sizes: what changes from the seed's GPU defaults so a run fits the machine. Each entry names
# (section, field) -> value. The reasons are printed by `describe_size`.
SIZE_PRESETS: dict[str, dict[tuple[str, str], Any]] = {
    "full": {},
    "smoke": {
        ("data", "num_distractors"): 1,
        ("data", "max_context_len"): 100,
        ("data", "add_cot"): False,
        ("data", "oracle_fraction"): 1.0,
        ("model", "max_seq_length"): 1024,
        ("train", "max_steps"): 36,
        ("train", "per_device_train_batch_size"): 1,
        ("train", "per_device_eval_batch_size"): 2,
        ("train", "gradient_accumulation_steps"): 1,
        ("train", "learning_rate"): 1e-3,
        ("train", "warmup_steps"): 2,
        ("train", "logging_steps"): 2,
        ("train", "eval_steps"): 18,
        ("train", "save_steps"): 18,
        ("train", "eval_max_examples"): 6,
        ("train", "output_dir"): "runs/smoke-qlora",
        ("eval", "num_examples"): 8,
        ("eval", "max_new_tokens"): 64,
        ("eval", "batch_size"): 8,
        ("eval", "rag_k"): 2,
    },
    "tiny": {
        ("data", "num_distractors"): 1,
        ("data", "max_context_len"): 80,
        ("data", "add_cot"): False,
        ("data", "oracle_fraction"): 1.0,
        ("model", "max_seq_length"): 1024,
        ("train", "max_steps"): 4,
        ("train", "per_device_train_batch_size"): 1,
        ("train", "per_device_eval_batch_size"): 2,
        ("train", "gradient_accumulation_steps"): 1,
        ("train", "learning_rate"): 1e-3,
        ("train", "warmup_steps"): 1,
        ("train", "logging_steps"): 1,
        ("train", "eval_steps"): 2,
        ("train", "save_steps"): 2,
        ("train", "eval_max_examples"): 2,
        ("train", "output_dir"): "runs/tiny-qlora",
        ("eval", "num_examples"): 4,
        ("eval", "max_new_tokens"): 24,
        ("eval", "batch_size"): 4,
        ("eval", "rag_k"): 2,
    },
}


# Why each smoke/tiny change is needed (2 CPU cores; SmolLM2's byte-level tokenizer spends ~2 tokens
# per Hangul character, so one RAFT example with 5 full documents would be ~4,500 tokens).
SIZE_REASONS = {
    "num_distractors": "문서 5개면 예제당 약 4,500 토큰: CPU에서는 골든 + 방해 1개",
    "max_context_len": "문서를 근거 문장 중심으로 100자 안팎으로 줄임",
    "add_cot": "CoT 목표는 답변의 약 3.5배 길이: CPU 시간 절약",
    "oracle_fraction": "36 스텝에서는 늘 같은 '답 없음' 문장이 가장 먼저 학습되어 다른 답을 밀어냄: P=1.0",
    "max_seq_length": "줄인 문맥이 잘리지 않는 길이",
    "max_steps": "2코어 CPU에서 몇 분 안에 끝나는 스텝 수",
    "learning_rate": "스텝이 적어 더 큰 학습률",
}


def apply_size(cfg: WorkshopConfig, size: str) -> WorkshopConfig:
    """Return a copy of `cfg` with the size preset applied (full = the seed's GPU values)."""
    if size not in SIZES:
        raise ValueError(f"WORKSHOP_SIZE={size!r}: 'full', 'smoke', 'tiny' 중 하나여야 합니다")
    cfg = dataclasses.replace(cfg, size=size, model=dataclasses.replace(cfg.model),
                              data=dataclasses.replace(cfg.data), lora=dataclasses.replace(cfg.lora),
                              train=dataclasses.replace(cfg.train), eval=dataclasses.replace(cfg.eval))
    for (section, name), value in SIZE_PRESETS[size].items():
        setattr(getattr(cfg, section), name, value)
    return cfg


def load_config(size: str | None = None, **overrides: Any) -> WorkshopConfig:
    """Build the config: size preset (env WORKSHOP_SIZE or automatic), then env, then overrides.

    `overrides` use dotted names: ``load_config(**{"train.max_steps": 10})`` or section dicts
    ``load_config(train={"max_steps": 10})``.
    """
    from .env import has_cuda

    size = size or os.environ.get("WORKSHOP_SIZE") or ("full" if has_cuda() else "smoke")
    cfg = apply_size(WorkshopConfig(), size)
    if os.environ.get("WORKSHOP_MODEL"):
        cfg.model.model_id = os.environ["WORKSHOP_MODEL"]
    if os.environ.get("WORKSHOP_BUILD_DIR"):
        cfg.build_dir = os.environ["WORKSHOP_BUILD_DIR"]
    if os.environ.get("WORKSHOP_EMBEDDING"):
        emb = os.environ["WORKSHOP_EMBEDDING"]
        cfg.eval.embedding_model = None if emb == "none" else emb
    if os.environ.get("WORKSHOP_MAX_STEPS"):
        cfg.train.max_steps = int(os.environ["WORKSHOP_MAX_STEPS"])
    for key, value in overrides.items():
        if isinstance(value, dict):
            for k, v in value.items():
                _set(cfg, f"{key}.{k}", v)
        else:
            _set(cfg, key.replace("__", "."), value)
    return cfg


def _set(cfg: WorkshopConfig, dotted: str, value: Any) -> None:
    obj: Any = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    if not hasattr(obj, parts[-1]):
        raise AttributeError(f"알 수 없는 설정 '{dotted}' (unknown config field)")
    setattr(obj, parts[-1], value)


def describe(section: Any) -> "list[dict]":
    """Rows (field, value, default, help) of one settings dataclass, for a table in a notebook."""
    rows = []
    for f in dataclasses.fields(section):
        if dataclasses.is_dataclass(getattr(section, f.name)):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"파라미터": f.name, "값": getattr(section, f.name), "기본값(GPU)": default,
                     "설명": f.metadata.get("help", "")})
    return rows


def size_changes(cfg: WorkshopConfig) -> "list[dict]":
    """What the active size changed relative to the seed's GPU defaults."""
    full = WorkshopConfig()
    return [{"설정": f"{s}.{n}", "GPU 기본값": getattr(getattr(full, s), n), f"{cfg.size} 값": v,
             "이유": SIZE_REASONS.get(n, "")}
            for (s, n), v in SIZE_PRESETS[cfg.size].items()]
