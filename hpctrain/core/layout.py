"""The job folder: the one definition of where a job's files live, and its format version.

    Repertoire_model_finetune/PROJECT/jobN-KIND/
        job.sh          the rendered script          job.json    settings the runner reads
        compile.sh      a chained job's first stage (compiling on a CPU partition); job.sh is
                        then its second stage (training and test)
        job.log         raw output                   events.jsonl  structured events
        efficiency.json what a finished job used (cluster/efficiency.py)
        notifications.jsonl   what was sent to the job's webhook (runtime/notify.py)
        split/          train.txt validation.txt test.txt (+ validation_arrow.txt)
        arrow_check.py  checks compiled data, so that a requeued job reuses it
        model/          ketos' checkpoints and best model
        checkpoints/    a torchrun script's checkpoints (last.pt, best.pt)
        code/           a torchrun script sent with the job
        submitit/       submitit's own files
    GT_compile/PROJECT/jobN/   train.arrow validation.arrow test.arrow compiled.json

The runner, the kraken and torchrun builders, the scheduler, status, fetch and clean all name
these files through this module.
"""

from __future__ import annotations

LAYOUT_VERSION = 1

SCRIPT = "job.sh"
COMPILE_SCRIPT = "compile.sh"
# A chained job's stages, in order, and the script each runs; one Slurm job each.
STAGE_SCRIPTS = {"compile": COMPILE_SCRIPT, "train": SCRIPT}
STAGES = tuple(STAGE_SCRIPTS)
LOG = "job.log"
EVENTS = "events.jsonl"
SETTINGS = "job.json"  # mode 0600 when it holds a webhook URL (a secret)
NOTIFICATIONS = "notifications.jsonl"  # the delivery record of runtime/notify.py
NOTIFY_LOCK = ".notifications.lock"  # held while notifications are sent and recorded
SPLIT_DIR = "split"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
CODE_DIR = "code"
SUBMITIT_DIR = "submitit"
SPLIT_PARTS = ("train", "validation", "test")
VALIDATION_ARROW_LIST = f"{SPLIT_DIR}/validation_arrow.txt"
ARROW_CHECK = "arrow_check.py"  # runtime/arrow_check.py, copied into kraken jobs that compile
PICK_BEST = "pick_best.py"  # runtime/pick_best.py, copied into kraken < 7 training jobs
# Space the runner holds while a job runs and gives back for its last events if the disk fills.
RESERVE = ".hpctrain-reserve"
EFFICIENCY = "efficiency.json"  # a finished job's figures, kept once whole


def split_file(part: str) -> str:
    return f"{SPLIT_DIR}/{part}.txt"


def arrow_file(part: str) -> str:
    return f"{part}.arrow"


def job_dir_name(finetuned: str, project: str, job_id: int, kind: str) -> str:
    """The job folder, relative to the cluster root (`finetuned` is the tree's folder name)."""
    return f"{finetuned}/{project}/job{job_id}-{kind}"


def compiled_dir_name(compiled: str, project: str, job_id: int) -> str:
    return f"{compiled}/{project}/job{job_id}"


# What `fetch` brings back besides the best model, relative to the job folder.
FETCHED = (EVENTS, LOG, SCRIPT, COMPILE_SCRIPT, *(split_file(p) for p in SPLIT_PARTS))
# What `clean` may delete in a job folder (never models): the raw log and submitit's output.
CLEANABLE_GLOBS = (LOG, f"{SUBMITIT_DIR}/*.out", f"{SUBMITIT_DIR}/*.err")
