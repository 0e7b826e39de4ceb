"""Slurm's partitions, and the preflight that checks a job against them before it is queued.

One query answers every check: `scontrol -a show partition -o` (limits, who may use each
partition) and `sinfo -a -N` (each node's CPUs, memory, GPUs, features and state, per
partition). `-a`: Slurm hides partitions the user's groups may not use unless asked, and
preflight has to say why a named partition is refused rather than call it unknown.

This module owns the cache of that query, `.hpctrain/partitions.json` under the cluster root:

    {"format": 1, "time": 1700000000.0, "partitions": [Partition.to_json(), ...]}

reused for CACHE_SECONDS, written whole (each writer its own temporary name, then a rename), and
read back only if it is whole and of this format: a damaged or foreign file is ignored and
written again, never an error. The cache holds what Slurm says of everyone; whether *this* user
may use a partition (groups, accounts, QOS) is decided on each read, for the user running this
process: the one who submits (on a login node over SSH, the cluster account).

The checks (`problems`) are pure functions of the partitions, the job's resources and the user,
so they are tested on captured outputs. What they cover: the partition exists and the user may
use it; the time is within MaxTime; the nodes within MaxNodes and the partition's size; each
feature word of `--constraint` exists on a node; CPUs, GPUs and memory each fit one node, and
enough nodes hold all of them at once (and all the features, for a constraint of ANDs only); a
torchrun job's processes per node have a CPU each. A kraken job's data-loader workers follow the
job's CPUs (`--workers $CPUS` in the template), so no request can ask for more workers than CPUs;
a torchrun script's own `--workers` are its arguments, not hpctrain's, and are not read.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..core.config import STATE_FOLDER
from ..core.errors import SchedulerError
from ..core.files import write_shared
from ..jobs.requests import Resources, slurm_time

CACHE = "partitions.json"
CACHE_FORMAT = 1
CACHE_SECONDS = 300  # partitions change rarely; a few minutes spare slurmctld a query per submit
SINFO_FORMAT = "%N|%R|%c|%m|%G|%f|%T"
SCONTROL = ["scontrol", "-a", "-o", "show", "partition"]
SINFO = ["sinfo", "-a", "-N", "-h", "-o", SINFO_FORMAT]
NO_LIMIT = ("UNLIMITED", "INFINITE", "NONE", "")
SEE = "(see 'hpctrain partitions')"


@dataclass(frozen=True)
class Node:
    """One node of a partition, as sinfo shows it."""

    name: str
    cpus: int
    memory: int  # megabytes (RealMemory)
    gpus: int
    features: tuple[str, ...] = ()
    state: str = ""


@dataclass(frozen=True)
class Partition:
    """One partition: its limits, who may use it, its nodes; and whether the user asking may."""

    name: str
    default: bool = False
    state: str = "UP"
    max_time: int | None = None  # seconds; None: no limit
    max_nodes: int | None = None  # per job; None: no limit
    hidden: bool = False
    allow_groups: tuple[str, ...] | None = None  # None: ALL
    allow_accounts: tuple[str, ...] | None = None
    deny_accounts: tuple[str, ...] = ()
    allow_qos: tuple[str, ...] | None = None
    deny_qos: tuple[str, ...] = ()
    nodes: tuple[Node, ...] = ()
    usable: bool | None = None  # for the user asking; None where not decided (the cache)
    why_not: str | None = None  # why that user may not use it

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted({f for node in self.nodes for f in node.features}))

    @property
    def restricted_by_account(self) -> bool:
        return bool(self.allow_accounts is not None or self.deny_accounts
                    or self.allow_qos is not None or self.deny_qos)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Partition":
        data = dict(data)
        for key in ("allow_groups", "allow_accounts", "allow_qos"):
            data[key] = tuple(data[key]) if data.get(key) is not None else None
        for key in ("deny_accounts", "deny_qos"):
            data[key] = tuple(data.get(key) or ())
        data["nodes"] = tuple(
            Node(**{**n, "features": tuple(n.get("features") or ())}) for n in data["nodes"]
        )
        return cls(**data)


@dataclass(frozen=True)
class User:
    """Who submits: the process's user, its groups, and its Slurm accounts and QOS (None where
    sacctmgr could not say: those checks are then skipped)."""

    name: str
    uid: int
    groups: tuple[str, ...] = ()
    accounts: tuple[str, ...] | None = None
    qos: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Flags:
    """The submit flags a fix names (kraken jobs and torchrun jobs spell some differently)."""

    cpus: str = "--cpus"
    gpus: str = "--gpus"
    nodes: str = "'nodes' in the project file"
    processes: str = ""


KRAKEN_FLAGS = Flags()
TORCHRUN_FLAGS = Flags("--cpus-per-task", "--gpus-per-node", "--nodes", "--nproc-per-node")


class PreflightError(SchedulerError):
    """Raised when a job asks for what its partition cannot give or the user may not use;
    nothing is queued. The message has every problem found, each with its fix."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{'; '.join(problems)} {SEE}")
        self.violations = list(problems)


# -- parsing (pure) ------------------------------------------------------------------------
def parse_time(text: str) -> int | None:
    """Seconds of a partition's MaxTime; None for no limit (UNLIMITED, INFINITE)."""
    if text.strip().upper() in NO_LIMIT:
        return None
    seconds = slurm_time(text.strip())
    if seconds is None:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    return seconds


def time_text(seconds: int | None) -> str:
    """A time limit as hours:minutes:seconds (a value --time takes), or 'none'."""
    if seconds is None:
        return "none"
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def memory_text(megabytes: int) -> str:
    """Megabytes as --mem writes them: 500G when whole gigabytes, else 12052M."""
    return f"{megabytes // 1024}G" if megabytes and megabytes % 1024 == 0 else f"{megabytes}M"


def memory_mb(text: str) -> int:
    """A --mem value (validated: digits and an optional K, M, G or T) in megabytes, rounded up."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", text.strip().upper())
    if not match:
        raise ValueError(f"not a Slurm size: {text!r}")
    number, unit = int(match.group(1)), match.group(2)
    if unit == "K":
        return -(-number // 1024)
    return number * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def _fields(line: str) -> dict[str, str]:
    """`Key=Value Key=Value` (scontrol -o); a word without '=' belongs to the value before it."""
    found: dict[str, str] = {}
    last = None
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            found[key], last = value, key
        elif last is not None:
            found[last] += " " + word
    return found


def _names(value: str | None) -> tuple[str, ...] | None:
    """An Allow list: None for ALL (or absent), else its names."""
    if value is None or value.strip().upper() == "ALL":
        return None
    return tuple(v for v in value.split(",") if v and v != "(null)")


def _max_time(value: str | None) -> int | None:
    """MaxTime; one this version cannot read limits nothing (preflight never refuses on it)."""
    try:
        return parse_time(value or "UNLIMITED")
    except ValueError:
        return None


def _limit(value: str | None) -> int | None:
    if value is None or value.strip().upper() in NO_LIMIT:
        return None
    return int(value) if value.isdigit() else None


def parse_scontrol(text: str) -> list[Partition]:
    """`scontrol -a -o show partition`: one partition per line, without nodes yet."""
    found = []
    for line in text.splitlines():
        fields = _fields(line)
        if "PartitionName" not in fields:
            continue
        found.append(Partition(
            name=fields["PartitionName"],
            default=fields.get("Default") == "YES",
            state=fields.get("State", "UP"),
            max_time=_max_time(fields.get("MaxTime")),
            max_nodes=_limit(fields.get("MaxNodes")),
            hidden=fields.get("Hidden") == "YES",
            allow_groups=_names(fields.get("AllowGroups")),
            allow_accounts=_names(fields.get("AllowAccounts")),
            deny_accounts=_names(fields.get("DenyAccounts")) or (),
            allow_qos=_names(fields.get("AllowQos")),
            deny_qos=_names(fields.get("DenyQos")) or (),
        ))
    return found


def _split_outside_parentheses(text: str) -> list[str]:
    """gpu:a100:4(S:0,1),shard:8 -> ['gpu:a100:4(S:0,1)', 'shard:8']."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in parts + [current] if p]


def gpu_count(gres: str) -> int:
    """The GPUs of a node's Gres (sinfo %G): gpu:4, gpu:a100:4(S:0-1), gpu:a:2,gpu:b:2 -> 4."""
    total = 0
    for item in _split_outside_parentheses(gres.strip()):
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        total += int(count) if count.isdigit() else 1  # gpu:a100: one of that type
    return total


def _number(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


def parse_sinfo(text: str) -> list[tuple[str, Node]]:
    """`sinfo -a -N -h -o '%N|%R|%c|%m|%G|%f|%T'`: (partition, node) for each line."""
    found = []
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) != 7:
            continue
        name, partition, cpus, memory, gres, features, state = cells
        found.append((partition.rstrip("*"), Node(
            name=name, cpus=_number(cpus), memory=_number(memory),
            gpus=0 if gres == "(null)" else gpu_count(gres),
            features=() if features in ("(null)", "") else tuple(features.split(",")),
            state=state,
        )))
    return found


def parse(scontrol_text: str, sinfo_text: str) -> list[Partition]:
    """The partitions with their nodes, from the outputs of one query."""
    nodes: dict[str, list[Node]] = {}
    for partition, node in parse_sinfo(sinfo_text):
        nodes.setdefault(partition, []).append(node)
    return [replace(p, nodes=tuple(nodes.get(p.name, ()))) for p in parse_scontrol(scontrol_text)]


def parse_associations(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`sacctmgr -n -P show assoc user=U format=account,qos`: (accounts, QOS names)."""
    accounts, qos = [], []
    for line in text.splitlines():
        account, _, names = line.strip().partition("|")
        if account and account not in accounts:
            accounts.append(account)
        qos += [q for q in names.split(",") if q and q not in qos]
    return tuple(accounts), tuple(qos)


# -- who may use a partition (pure) ---------------------------------------------------------
def why_not(partition: Partition, user: User) -> str | None:
    """Why `user` may not use `partition`, or None if they may (or it cannot be told)."""
    name = partition.name
    # Slurm lets the super-user run anywhere, whatever AllowGroups says.
    if partition.allow_groups is not None and user.uid != 0 \
            and not set(partition.allow_groups) & set(user.groups):
        return (f"you ({user.name}) may not use partition {name}: it allows the groups "
                f"{', '.join(partition.allow_groups)} and yours are "
                f"{', '.join(user.groups) or 'none'}; choose another partition")
    if user.accounts:
        refused = _refused(name, user, "accounts", user.accounts, partition.allow_accounts,
                           partition.deny_accounts, " or ask for an account there")
        if refused:
            return refused
    if user.qos:
        return _refused(name, user, "QOS", user.qos, partition.allow_qos, partition.deny_qos)
    return None


def _refused(name: str, user: User, what: str, mine, allowed, denied,
             ask: str = "") -> str | None:
    """Why an Allow*/Deny* list of the partition refuses all of the user's `what` (accounts,
    QOS), or None."""
    if allowed is not None and not set(mine) & set(allowed):
        return (f"you ({user.name}) may not use partition {name}: it allows the {what} "
                f"{', '.join(allowed)} and yours are {', '.join(mine)}; choose another "
                f"partition{ask}")
    if denied and set(mine) <= set(denied):
        return (f"you ({user.name}) may not use partition {name}: it denies your {what} "
                f"{', '.join(mine)}; choose another partition")
    return None


def for_user(partitions: list[Partition], user: User) -> list[Partition]:
    """The partitions, each with whether `user` may use it."""
    decided = []
    for partition in partitions:
        reason = why_not(partition, user)
        decided.append(replace(partition, usable=reason is None, why_not=reason))
    return decided


# -- the checks (pure) ---------------------------------------------------------------------
def constraint_words(expression: str) -> tuple[list[str], bool]:
    """The feature words of a Slurm constraint, and whether it only ANDs them (& or ,): then
    one node must have them all. Brackets, parentheses and counts (*N) are not features."""
    words = [w for w in re.split(r"[&|,\[\]()]", expression) if w]
    words = [re.sub(r"\*\d+$", "", w) for w in words]
    return [w for w in words if w], "|" not in expression


def _fits(node: Node, cpus: int, gpus: int, memory: int | None, features: list[str]) -> bool:
    return (node.cpus >= cpus and node.gpus >= gpus
            and (memory is None or node.memory >= memory) and set(features) <= set(node.features))


def _chosen(partitions: list[Partition], name: str | None) -> tuple[Partition | None, str | None]:
    """The partition a job goes to (the default one without --partition), or why none."""
    visible = ", ".join(p.name for p in partitions if not p.hidden) or "none"
    if name is None:
        default = next((p for p in partitions if p.default), None)
        if default is None:
            return None, (f"no partition was given and the cluster has no default one: pass "
                          f"--partition (partitions: {visible})")
        return default, None
    found = next((p for p in partitions if p.name == name), None)
    if found is None:
        return None, (f"partition {name!r} does not exist here (partitions: {visible}): "
                      "choose one with --partition")
    return found, None


def problems(partitions: list[Partition], res: Resources, user: User,
             flags: Flags = KRAKEN_FLAGS, processes: int | None = None) -> list[str]:
    """Everything in `res` that the partition cannot give or the user may not use, one line
    each with its fix; empty when the job can run there. `processes`: a torchrun job's
    processes per node. Several partitions (`gpu,gpu_dev`: Slurm takes the first that can
    start the job): refused only if each of them refuses."""
    names = [n for n in (res.partition or "").split(",") if n]
    if len(names) > 1:
        each = [problems(partitions, replace(res, partition=n), user, flags, processes)
                for n in names]
        return [] if not all(each) else [p for found in each for p in found]
    partition, missing = _chosen(partitions, res.partition)
    if partition is None:
        return [missing]
    refused = why_not(partition, user)
    if refused:
        return [refused]
    everywhere = {f for p in partitions for f in p.features}
    found = _limits(partition, res, flags, everywhere)
    if processes and res.cpus < processes:
        found.append(f"torchrun starts {processes} processes per node and each needs a CPU "
                     f"(asked {flags.cpus} {res.cpus}): ask {flags.cpus} {processes} or more, "
                     f"or lower {flags.processes}")
    return found


def _feature_problems(partition: Partition, constraint: str, everywhere: set[str]) -> list[str]:
    """A constraint of ANDs needs each word on a node here. With an OR, a word missing here
    may be another alternative's: refused are only words no node of the cluster has, or an
    expression none of whose words a node here has."""
    words, all_of = constraint_words(constraint)
    here = set(partition.features)
    there = ", ".join(partition.features) or "none"
    if all_of:
        missing = [w for w in words if w not in here]
    elif words and not here & set(words):
        return [f"no node of {partition.name} has any of the features {', '.join(words)} "
                f"(features there: {there}): change --constraint or choose another partition"]
    else:
        missing = [w for w in words if w not in everywhere]
    return [f"no node of {partition.name} has the feature {w!r} (features there: {there}): "
            "change --constraint or choose another partition" for w in missing]


def _limits(partition: Partition, res: Resources, flags: Flags,
            everywhere: set[str]) -> list[str]:
    """What the partition's limits and nodes cannot give; the problems with the partition as
    a whole first, then those of one node, then whether enough nodes hold everything at once."""
    name, found = partition.name, []
    asked_time = slurm_time(str(res.time))
    if partition.max_time is not None and asked_time and asked_time > partition.max_time:
        found.append(f"{name} allows at most {time_text(partition.max_time)} "
                     f"(asked {res.time}): lower --time or choose another partition")
    if not partition.nodes:
        return found + [f"{name} has no nodes: choose another partition"]
    if partition.max_nodes is not None and res.nodes > partition.max_nodes:
        found.append(f"{name} allows at most {partition.max_nodes} node(s) per job (asked "
                     f"{res.nodes}): lower {flags.nodes} or choose another partition")
    elif res.nodes > len(partition.nodes):
        found.append(f"{name} has {len(partition.nodes)} node(s) (asked {res.nodes}): lower "
                     f"{flags.nodes} or choose another partition")
    found += _feature_problems(partition, res.constraint or "", everywhere)
    found += _size_problems(partition, res, flags)
    return found or _together_problems(partition, res)


def _size_problems(partition: Partition, res: Resources, flags: Flags) -> list[str]:
    """CPUs, GPUs and memory that no node of the partition has, each alone."""
    name, nodes, found = partition.name, partition.nodes, []
    cpus, gpus = max(n.cpus for n in nodes), max(n.gpus for n in nodes)
    memory = max(n.memory for n in nodes)
    if res.cpus > cpus:
        found.append(f"{name}'s nodes have at most {cpus} CPUs (asked {res.cpus}): "
                     f"lower {flags.cpus} or choose another partition")
    if res.gpus > gpus:
        have = f"at most {gpus} GPUs per node" if gpus else "no GPUs"
        found.append(f"{name} has {have} (asked {res.gpus}): lower {flags.gpus} or choose "
                     "another partition")
    if res.mem and memory_mb(res.mem) > memory:
        found.append(f"{name}'s nodes have at most {memory_text(memory)} of memory "
                     f"(asked {res.mem}): lower --mem or choose another partition")
    return found


def _together_problems(partition: Partition, res: Resources) -> list[str]:
    """Each resource fits some node: do enough nodes hold them all at once (and every
    feature of a constraint of ANDs)?"""
    words, all_of = constraint_words(res.constraint or "")
    together = words if all_of else []
    memory = memory_mb(res.mem) if res.mem else None
    fitting = [n for n in partition.nodes if _fits(n, res.cpus, res.gpus, memory, together)]
    if len(fitting) >= res.nodes:
        return []
    asked = ", ".join([f"{res.cpus} CPUs"] + ([f"{res.gpus} GPUs"] if res.gpus else [])
                      + ([f"{res.mem} of memory"] if res.mem else [])
                      + ([f"the features {'&'.join(together)}"] if together else []))
    return [f"{'no' if not fitting else f'only {len(fitting)}'} node(s) of {partition.name} "
            f"have {asked} at once (asked {res.nodes} node(s)): ask for less or choose "
            "another partition"]


# -- asking Slurm, and the cache --------------------------------------------------------------
def _ask(argv: list[str], what: str, timeout: float = 30) -> str:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SchedulerError(f"{argv[0]} not found on this machine: is Slurm installed here "
                             "(or does it need 'module load slurm')?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{what} timed out after {timeout:.0f} s: is the Slurm controller "
                             "up?") from None
    if done.returncode:
        message = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise SchedulerError(f"{what} failed: {message}")
    return done.stdout


def query() -> list[Partition]:
    """Ask Slurm now: one scontrol and one sinfo."""
    return parse(_ask(SCONTROL, "scontrol show partition"), _ask(SINFO, "sinfo (nodes)"))


def cache_path(root: Path) -> Path:
    return Path(root) / STATE_FOLDER / CACHE


def read_cache(path: Path, now: float | None = None,
               max_age: float = CACHE_SECONDS) -> list[Partition] | None:
    """The cached partitions if the file is whole, of this format and fresh; else None."""
    now = time.time() if now is None else now
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written = float(data["time"])
        if data["format"] != CACHE_FORMAT or not 0 <= now - written < max_age:
            return None
        return [Partition.from_json(p) for p in data["partitions"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, damaged, or another format: asked again and rewritten


def write_cache(path: Path, partitions: list[Partition], now: float | None = None) -> None:
    data = {"format": CACHE_FORMAT, "time": time.time() if now is None else now,
            "partitions": [p.to_json() for p in partitions]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shared(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    except OSError:
        pass  # a cache that cannot be written (full disk, no tree yet) is only asked again


def cached(root: Path, refresh: bool = False) -> list[Partition]:
    """The partitions from the cache if it is fresh, else asked of Slurm (and cached)."""
    path = cache_path(root)
    found = None if refresh else read_cache(path)
    if found is None:
        found = query()
        write_cache(path, found)
    return found


def current_user(accounts: bool) -> User:
    """The user running this process; with `accounts`, also their Slurm accounts and QOS."""
    import grp
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    groups = []
    for gid in [os.getgid(), *os.getgroups()]:
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if group not in groups:
            groups.append(group)
    user = User(name, uid, tuple(groups))
    if not accounts:
        return user
    try:
        text = _ask(["sacctmgr", "-n", "-P", "show", "assoc", f"user={name}",
                     "format=account,qos"], "sacctmgr (your accounts)", timeout=15)
    except SchedulerError:
        return user  # accounting cannot say: the account checks are skipped
    mine, qos = parse_associations(text)
    return replace(user, accounts=mine or None, qos=qos or None)


def partitions(root: Path, refresh: bool = False) -> list[Partition]:
    """`hpctrain partitions`: every partition, each with whether this user may use it."""
    found = cached(root, refresh)
    user = current_user(accounts=any(p.restricted_by_account for p in found))
    return for_user(found, user)


def preflight(root: Path, res: Resources, flags: Flags = KRAKEN_FLAGS,
              processes: int | None = None) -> None:
    """Refuse, in one line, a job its partition cannot run or the user may not use there.
    When Slurm cannot be asked (controller down, no sinfo here), nothing is checked: sbatch
    then says what is wrong in its own words."""
    try:
        found = cached(root)
    except SchedulerError:
        return
    names = (res.partition or "").split(",")
    chosen = [p for p in found if p.name in names or (not res.partition and p.default)]
    user = current_user(accounts=any(p.restricted_by_account for p in chosen))
    wrong = problems(found, res, user, flags, processes)
    if wrong:
        raise PreflightError(wrong)

