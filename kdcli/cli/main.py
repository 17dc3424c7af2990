"""The `kd` command. argparse picks the subcommand; `kd train`'s arguments go to Hydra untouched.

Exit codes: 0 done, 2 bad input (config, files, data), 1 failure while running.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from kdcli import __version__
from kdcli.cli import cache_command, eval_command, export_command, run_dirs, serve_command
from kdcli.cli.cache_command import add_cache_parser
from kdcli.cli.completion import add_completion_parser
from kdcli.cli.eval_command import add_eval_parser
from kdcli.cli.export_command import add_export_parser
from kdcli.cli.serve_command import add_serve_parser
from kdcli.config import resolvers
from kdcli.config.paths import config_dir
from kdcli.engine.interrupt import Interrupted, handle_signals, pass_on
from kdcli.engine.ranks import env_rank
from kdcli.errors import RunError, UserError, name_too_long, out_of_space, report_error
from kdcli.store.cache import vanished

DEBUG_FLAG = "--debug"
MULTIRUN_FLAGS = ("-m", "--multirun")  # anywhere on `kd train`'s command line
resolvers.register()  # before Hydra reads the configs, also in a job that submitit unpickles


def report_interrupt(stop: Interrupted) -> int:
    """One line on stderr: what stopped the run, what was saved, how to go on; the exit code.
    Under torchrun rank 0 says it (it writes the state; the other ranks stop at its step)."""
    if stop.saved is not None:
        done = f"saved the state of {stop.position} in {stop.saved}"
    else:
        done = "every finished stage is in the cache"
    if env_rank() == 0:
        print(
            f"kd: stopped by {stop.name}; {done}. Run the same command again to continue.",
            file=sys.stderr,
        )
    pass_on(stop.signum)  # e.g. submitit's handler, which requeues the job
    return stop.exit_code


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_job(cfg: DictConfig) -> Any:
    """One Hydra job (one point of a sweep). Returns the student's headline metric (top-1)
    for sweepers; a search's trial returns its outcome instead (kdcli/search/job.py: judged on
    validation, and a RunError fails the trial, not the search)."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    from kdcli.config.device import resolve_device
    from kdcli.config.objects import build
    from kdcli.engine import distributed
    from kdcli.pipeline.run import run
    from kdcli.search import job as search_job

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trial = search_job.link(HydraConfig.get())  # None unless a search's trial
    if trial is not None:  # the pre-flight checked each searched value, not every combination
        combination = search_job.refused(cfg)
        if combination is not None:
            return combination
    try:
        device = distributed.setup(resolve_device(cfg.device))
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            objects = build(cfg, device)  # built once and checked, before any training
        except (UserError, OSError) as error:
            refused = error if isinstance(error, UserError) else name_too_long(error)
            if refused is None:
                raise
            _discard(run_dir)  # the built objects failed their checks: leave nothing behind
            raise refused from None
        if trial is not None:
            objects = search_job.watch(objects, trial)
        report = run(cfg, run_dir, objects, device)
    except search_job.Pruned as stop:
        return search_job.pruned(stop)
    except (UserError, RunError) as error:
        return _stopped(error, trial is not None)
    except Interrupted as stop:
        sys.exit(report_interrupt(stop))
    except OSError as error:  # a full disk, a name too long, a cache entry deleted by hand
        known = out_of_space(error, None) or name_too_long(error) or vanished(error, cfg.cache_dir)
        if known is None:
            raise
        sys.exit(report_error(known))  # a search stops too (its trials run again on a rerun)
    except torch.OutOfMemoryError:
        if trial is not None:
            return search_job.failed(RunError("out of memory"))
        sys.exit(
            report_error(
                RunError(
                    "out of memory; lower teacher.batch_size / student.batch_size "
                    "or use a smaller model."
                )
            )
        )
    if report is None:
        return None  # not rank 0
    return search_job.complete(report) if trial is not None else report["student"][report["metric"]]


def _stopped(error: UserError | RunError, in_search: bool) -> Any:
    """Exit with kd's message and code; a search's trial prints the message and returns its
    outcome instead, so that the sweeper tells the study every trial of the batch first (a
    RunError fails the trial and the search goes on; bad input stops the search)."""
    from kdcli.search import job as search_job

    if not in_search:
        sys.exit(report_error(error))
    if isinstance(error, RunError):
        return search_job.failed(error)
    report_error(error)
    return search_job.bad_input(error)


def _discard(run_dir: Path) -> None:
    """Leave no trace of a job whose objects failed their checks: put back what Hydra changed
    in a run directory that was there before (run_dirs.py), or remove the one Hydra made (it
    holds only Hydra's config and the log) and its parents as far as they are left empty."""
    if run_dirs.put_back(run_dir):
        return
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {".hydra", "train.log"}:
        return
    logging.shutdown()  # close train.log
    shutil.rmtree(run_dir, ignore_errors=True)
    parent, cwd = run_dir.parent, Path.cwd().resolve()
    while parent.resolve() != cwd and cwd in parent.resolve().parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            try:
                (parent / "multirun.yaml").unlink(missing_ok=True)
                parent.rmdir()  # a sweep folder holding only Hydra's note of the sweep
            except OSError:
                break
        parent = parent.parent


def train(args: list[str]) -> int:
    """`kd train [overrides] [hydra flags]`: check every job's config, then hand over to Hydra."""
    from kdcli.config.hydra_shim import args_parser
    from kdcli.engine.ranks import launched_by_torchrun, rank_scratch

    if DEBUG_FLAG in args:
        os.environ["KD_DEBUG"] = "1"
        args = [a for a in args if a != DEBUG_FLAG]
    if any(a in MULTIRUN_FLAGS for a in args):  # Hydra's parser takes -m only before overrides
        args = ["--multirun", *(a for a in args if a not in MULTIRUN_FLAGS)]
    parser = args_parser()
    parser.prog = "kd train"
    parsed = parser.parse_args(args)
    if parsed.shell_completion:  # Hydra's completion script cannot call a subcommand
        return report_error(
            UserError(
                "kd train does not support Hydra's --shell-completion (-sc): its script cannot "
                "call a subcommand. kd's own completes kd train too: "
                'eval "$(kd completion bash)" (or zsh); `kd list [group]` shows every config '
                "group's options and `kd train --cfg job` every key."
            )
        )
    if parsed.experimental_rerun:  # Hydra would unpickle that file: a pickle runs any code
        return report_error(
            UserError(
                f"kd train does not support Hydra's --experimental-rerun "
                f"({parsed.experimental_rerun}): it unpickles the file, and a pickle can run any "
                "code. Rerun a job by giving its overrides again: RUN/.hydra/overrides.yaml "
                "lists them."
            )
        )
    modes = [f"--{m}" for m in ("multirun", "cfg", "info", "run") if getattr(parsed, m)]
    if len(modes) > 1:  # Hydra's own check would end in a traceback
        return report_error(
            UserError(
                f"{' and '.join(modes)} cannot go together (each is a different thing for "
                "kd train to do); keep one of them."
            )
        )
    if parsed.help and not (parsed.config_name or parsed.config_path or parsed.config_dir):
        from kdcli.config.train_help import train_help  # Hydra's text, without its slow listing

        text = train_help(parsed.overrides, resolve=parsed.resolve)
        if text is not None:
            print(text)
            return 0
    informational = parsed.help or parsed.hydra_help or parsed.info
    if not informational:  # --help, --hydra-help and --info stay clear of torch: fast
        from kdcli.config.checks import check_overrides

        try:
            check_overrides(parsed.overrides, multirun=parsed.multirun, values=not parsed.cfg)
            if not parsed.cfg:  # a run: what a job that fails its checks must leave as it was
                run_dirs.keep(parsed.overrides, parsed.multirun)
        except UserError as error:
            return report_error(error)
    try:
        with handle_signals(), rank_scratch() as for_this_rank:
            sys.argv = ["kd train", *args, *for_this_rank]
            _train_job()
    except Interrupted as stop:  # a signal while Hydra itself was working
        return report_interrupt(stop)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    if launched_by_torchrun():  # only such a process has a process group to leave
        from kdcli.engine import distributed

        distributed.finish()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd",
        description="Knowledge distillation: train (or load) a teacher, store its soft labels, "
        "distill a student, and compare them.",
        epilog="`kd train --help` lists train's config groups and keys; "
        "`kd train --cfg job` prints the composed config.",
    )
    parser.add_argument("--version", action="version", version=f"kdcli {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "train",
        add_help=False,
        help="teacher -> soft labels -> student -> report (Hydra overrides: key=value, -m)",
    )
    commands.add_parser(
        "list",
        add_help=False,
        help="the options of every config group, or of one; --details / --layers for models "
        "(`kd list --help`)",
    )
    add_report_parser(commands)
    add_eval_parser(commands)
    add_export_parser(commands)
    add_cache_parser(commands)
    add_serve_parser(commands)
    add_completion_parser(commands)
    return parser


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="a table over runs or a sweep: swept settings, accuracies, KD gain, sizes, time",
        description="One row per setting over the report.json files found at or below PATH (run "
        "directories or a sweep folder such as outputs/multirun/<date>/<time>): runs that differ "
        "only in seed share a row with mean ± std. Also writes the rows as CSV. An Optuna "
        "search's directory (holding search.json): one row per trial with its validation "
        "figure, the best trial marked, its test figure shown once, and Optuna's history and "
        "importance plots (search_history.png, search_importance.png beside the CSV).",
    )
    report.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    report.add_argument("--sort", metavar="COLUMN", help="sort by a column (its CSV name)")
    report.add_argument("--desc", action="store_true", help="sort in descending order")
    report.add_argument(
        "--csv", type=Path, metavar="FILE", help="where the CSV goes (default: PATH/report.csv)"
    )
    report.add_argument(
        "--per-run",
        action="store_true",
        help="one row per run (default: runs that differ only in seed share a row, mean ± std)",
    )
    report.add_argument(
        "--plot",
        nargs="?",
        const=True,
        metavar="FILE",
        help="also draw student top-1 against each swept setting as a PNG "
        "(default FILE: report.png beside the CSV; put --plot after the PATHs or give FILE; "
        "needs `pip install kdcli[plot]`)",
    )


def report(args: argparse.Namespace) -> int:
    """`kd report PATH...`."""
    from kdcli.cli.search_file import find_search
    from kdcli.cli.sweep_report import default_csv_path, show
    from kdcli.config.writable import check_writable_file

    csv_path = args.csv or default_csv_path(args.paths)
    plot_path = csv_path.with_name("report.png") if args.plot is True else args.plot
    try:
        check_writable_file("--csv", csv_path, "report.csv")  # before reading anything
        search = find_search(args.paths)
        if search is not None:  # an Optuna search: its trials, judged on validation
            from kdcli.cli.search_report import show_search

            return show_search(
                search,
                sort=args.sort,
                descending=args.desc,
                csv_path=csv_path,
                plot=bool(args.plot),
            )
        if plot_path is not None:
            check_writable_file("--plot", Path(plot_path), "report.png")
        return show(
            args.paths,
            sort=args.sort,
            descending=args.desc,
            csv_path=csv_path,
            plot_path=None if plot_path is None else Path(plot_path),
            per_run=args.per_run,
        )
    except UserError as error:
        return report_error(error)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        return train(argv[1:])
    if argv and argv[0] == "list":
        from kdcli.cli import listing

        try:
            return listing.main(argv[1:])
        except UserError as error:
            return report_error(error)
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return report(args)
    if args.command == "completion":
        from kdcli.cli import completion

        return completion.run(args, build_parser())
    commands = {
        "cache": cache_command,
        "eval": eval_command,
        "export": export_command,
        "serve": serve_command,
    }
    if args.command in commands:
        command = commands[args.command]
        try:
            return command.run(args)
        except (UserError, RunError) as error:
            return report_error(error)
    build_parser().print_help()
    return 0
