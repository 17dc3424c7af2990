"""The OmegaConf resolvers kdcli's configs use, registered before Hydra reads them.

`${kd.slurm_tag:}` names the SLURM job in run directories, so two jobs that start in the same
second (two tasks of a job array, or two `sbatch` jobs) never share a directory:
`_slurm<array job>_<task>` in a job-array task, `_slurm<job id>` in another job, and nothing
outside SLURM. It is cached like Hydra's `${now:}`, so every job of a sweep that
hydra-submitit-launcher submits resolves its sweep directory to the same value.

`${kd.files_stamp:DIR}` is a short hash of the names, sizes and modification times of the
files in DIR: a model read from a directory (`teacher=hf`) carries it in its config, so new
weights saved under the same path make a new cache key (a different teacher).

`${kd.text_windows:TEACHER_TOKENIZER,DATASET_TOKENIZER}` is how text is cut into windows:
`characters` when the teacher reads a tokenizer that is not the student's
(`teacher.tokenizer`, kdcli/pipeline/tokenizers.py), so that window i is the same text to
both, else `tokens`. The run's config.yaml holds the value it resolved to, so `kd eval`
cuts the text as the run did.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import OmegaConf

from kdcli.pipeline.tokenizers import own_tokenizer


def slurm_tag() -> str:
    """`_slurm<id>` for the SLURM job (or job-array task) this process runs in, else ""."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"_slurm{array_job}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    return f"_slurm{job}" if job else ""


def files_stamp(path: str) -> str:
    """The identity of the files in `path` (see the module's docstring)."""
    directory = Path(str(path)).expanduser()
    if not directory.is_dir():
        return "missing"  # the model's builder says what is wrong with the path
    files = [(p.name, p.stat()) for p in directory.iterdir() if p.is_file()]
    facts = sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in files)
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:16]


def text_windows(teacher: str | None, student: str | None) -> str:
    """`characters` when the teacher reads its own tokenizer, else `tokens`."""
    return "tokens" if own_tokenizer(teacher, student) is None else "characters"


def register() -> None:
    if not OmegaConf.has_resolver("kd.slurm_tag"):
        OmegaConf.register_new_resolver("kd.slurm_tag", slurm_tag, use_cache=True)
    if not OmegaConf.has_resolver("kd.files_stamp"):
        OmegaConf.register_new_resolver("kd.files_stamp", files_stamp)
    if not OmegaConf.has_resolver("kd.text_windows"):
        OmegaConf.register_new_resolver("kd.text_windows", text_windows)
