"""Settings shared by the end-to-end tests (a module with a name no other test folder uses:
`conftest` is ambiguous when several folders have one)."""

# Small enough to finish in seconds on two CPU cores.
TINY = [
    "teacher=smallcnn",
    "teacher.model.width=8",
    "student=mlp",
    "student.model.hidden=[32]",
    "teacher.epochs=1",
    "student.epochs=1",
    "eval.latency_runs=2",
    "plots=false",  # the PNGs cost about a second a run; test_pipeline draws them once
]

# `task=lm` with the smallest GPT, one epoch each, on 6,000 characters
TINY_LM = [
    "task=lm",
    "teacher=gpt_tiny",
    "teacher.epochs=1",
    "student.epochs=1",
    "dataset.max_chars=6000",
    "dataset.block_size=32",
    "eval.latency_runs=2",
    "plots=false",
]

# `task=instruct` on 300 drills with the smallest GPT, one epoch each
TINY_INSTRUCT = [
    "task=instruct",
    "teacher=gpt_tiny",
    "teacher.epochs=1",
    "student.epochs=1",
    "dataset.count=300",
    "eval.latency_runs=2",
    "plots=false",
]

# text classification with the tiny built-in classifier (a teacher= is added), one epoch each,
# on a JSON Lines file (dataset.path=...)
TINY_TEXT = [
    "dataset=text_classify",
    "student=text_transformer_tiny",
    "teacher.epochs=1",
    "student.epochs=1",
    "eval.latency_runs=2",
    "plots=false",
]
