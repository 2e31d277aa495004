"""One way to configure: every CLI flag has an environment variable twin.

``--ice-host`` reads ``MEDIASERVER_ICE_HOST`` when the flag is absent. The flag wins. The
name comes from the flag alone, whatever the sub-command: a setting two sub-commands share
has one flag name and so one variable (``--asr-engine`` in ``serve`` and ``transcribe``).

Bad settings raise :class:`UsageError`; ``mediaserver`` prints it as one line on stderr and
exits 2, as argparse does for its own errors. A value that came from a variable is checked as
the flag's would be (type, choices, yes/no) and its errors name the variable, not the flag
(:func:`check_env`, :func:`name_sources`). No setting takes an empty value (``--asr ''``,
``MEDIASERVER_ASR=``, ``--rooms ,``): a flag is left out, a variable unset; the few where an
empty value means something say so (``add_option(empty_means=...)``, ``--metrics-token ''``).
Nor does a comma list take an empty entry (``--ice-host 10.0.0.1,,``, ``MEDIASERVER_ASR=local,``):
every comma-list flag is parsed by :func:`comma_list` and read by :func:`comma_values`.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
GIVEN = "_flags_given"   # Namespace attribute: the dests set on the command line (not by a variable)


class UsageError(ValueError):
    """A bad flag value or combination; the message names the flag (``--port must be ...``).
    ``mediaserver`` prints ``mediaserver CMD: error: MESSAGE`` on stderr and exits 2."""


def env_name(flag: str) -> str:
    return "MEDIASERVER_" + flag.lstrip("-").replace("-", "_").upper()


def is_blank(value: str) -> bool:
    """Empty, blanks, or a comma list that names nothing (``","``): no setting takes it."""
    return not value.replace(",", "").strip()


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroups(text: Optional[str] = None) -> tuple[str, str]:
    """This process's cgroup paths from ``/proc/self/cgroup`` (or ``text``, its contents):
    (the v2 path of the ``0::PATH`` line, the v1 path of the line whose controllers include
    ``cpu``), each ``/`` when absent. Inside a container with its own cgroup namespace both are
    ``/``; a systemd service (``CPUQuota=``) or a host-namespace container has its real path."""
    if text is None:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            text = ""
    v2 = v1 = "/"
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2] or "/"
        elif "cpu" in parts[1].split(","):
            v1 = parts[2] or "/"
    return v2, v1


def _up_from(base: Path, path: str) -> list[Path]:
    """``base/path`` and each folder above it up to ``base`` (a parent's limit binds too)."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cpu_quota(root: Path = CGROUP_ROOT, cgroups: Optional[str] = None) -> Optional[float]:
    """CPUs' worth of time this process's cgroup may use per period (``docker run --cpus 2``,
    a Kubernetes CPU limit, systemd's ``CPUQuota=200%``): cgroup v2 ``cpu.max`` (``QUOTA
    PERIOD`` or ``max PERIOD``), else v1 ``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1:
    none), the lowest along this process's own cgroup (:func:`_own_cgroups`, ``cgroups``: the
    text of ``/proc/self/cgroup``) and the cgroups above it: the root's files alone missed a
    systemd service's quota (the root cgroup has no ``cpu.max``). None when unlimited or
    unknown. ``root`` is where the cgroup file system is mounted (a container sees its own
    cgroup there; a path under it that is not mounted there is skipped)."""
    v2_path, v1_path = _own_cgroups(cgroups)
    found_v2 = False
    quotas: list[float] = []
    for folder in _up_from(root, v2_path):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            found_v2 = True
            if quota != "max":
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
    if found_v2:
        return min(quotas, default=None)
    for folder in _up_from(root / "cpu", v1_path):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota_us > 0 and period_us > 0:
            quotas.append(quota_us / period_us)
    return min(quotas, default=None)


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """CPU cores this process can use, at least 1: its affinity mask (``taskset``, a cpuset),
    lowered to its cgroup's CPU quota rounded up (:func:`cpu_quota`), not the host's count: a
    container limited to 2 CPUs on a 64-core host gets 2 media workers, not 64."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def count_or_auto(cap: int) -> Any:
    """An argparse ``type`` for a whole number or ``auto`` (:func:`usable_cores`, at most
    ``cap``); a word is refused as the flag is parsed, naming it. The range is the caller's
    check (``serve``'s is made after its others: ``--workers 0`` is the tests' way to a
    settings check that never starts a server)."""

    def convert(text: str) -> int:
        if text.strip().lower() == "auto":
            return min(cap, usable_cores())
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or auto") from None

    convert.__name__ = "int"
    return convert


def number_in(low: Optional[float] = None, high: Optional[float] = None, kind: type = float,
              *, or_zero: bool = False) -> Any:
    """An argparse ``type`` for a number within ``low..high`` (either end open when None; with
    ``or_zero``, 0 is accepted too: "off"), so a value out of range is refused as the flag is
    parsed, naming it (``argument --canary-share: must be within 0..1, got 2``), or its variable
    (:func:`_env_value`), before anything starts: not a ValueError when the server builds it."""
    words = {int: "a whole number", float: "a number"}[kind]
    if low is not None and high is not None:
        wanted = f"within {low:g}..{high:g}"
    elif low is not None:
        wanted = f"at least {low:g}"
    else:
        wanted = f"at most {high:g}"
    wanted += " (or 0: off)" if or_zero else ""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {words}") from None
        if not math.isfinite(value) or (not (or_zero and value == 0) and (
                (low is not None and value < low) or (high is not None and value > high))):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def comma_entries(text: str, item: Callable[[str], Any] = str) -> list[Any]:
    """The entries of a comma list, each stripped and passed through ``item`` (an argparse
    ``type``: ``str``, :func:`number_in`): ``"a, b"`` -> ``["a", "b"]``. The one reading of
    every comma-list flag and its variable (:func:`comma_list`, :func:`comma_values`).

    Raises ValueError on an empty entry (``a,,b``, a leading or trailing comma, ``a, ,b``: a
    value left out by mistake is refused, never skipped) or an entry ``item`` refuses. The
    message starts with the text and names no flag (its caller does, once; a variable's
    text is not said twice, :func:`_env_value`): ``'a,,b' has an empty entry (entry 2 of 3
    in the comma list)``."""
    entries = [x.strip() for x in text.split(",")]
    where = "in the comma list"
    for i, entry in enumerate(entries, 1):
        if not entry:
            raise ValueError(f"{text!r} has an empty entry (entry {i} of {len(entries)} {where})")
    out = []
    for i, entry in enumerate(entries, 1):
        try:
            out.append(item(entry))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            why = str(exc) or f"is not a valid {getattr(item, '__name__', 'value')} value"
            raise ValueError(f"{text!r} has a bad entry (entry {i} of {len(entries)} {where}): "
                             f"{why}") from None
    return out


def ip_address(text: str) -> str:
    """An argparse ``type`` (or :func:`comma_list` item) for an IP address literal, IPv4 or
    IPv6 (``10.0.0.1``, ``::1``), returned as given. ``--ice-host`` takes these only: aioice
    puts each pinned text into a candidate as it is, so a host name or ``999.1.1.1`` used to
    start a server whose calls never connected (and a client refused with the server's
    ``bad-sdp``), with no word about the flag."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (10.0.0.1, ::1)") from None
    return text


def not_on_this_machine(address: str) -> Optional[str]:
    """Why ``address`` (an IP literal) is no address of this machine's interfaces, in words
    (``cannot assign requested address``), or None when it is one. aioice gathers a host
    candidate by binding a UDP socket to each pinned address: one it cannot bind gives no
    candidate (a client's offer had none and the server answered with its ``bad-sdp``; a
    server's answers had none and every call failed with no word). The unspecified address
    (``0.0.0.0``, ``::``) binds but is no interface's: a candidate on it is unreachable
    (aioice offers it as is), and a multicast address is none either."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_unspecified:
        return "the unspecified address: it binds every interface and is none of them"
    if ip.is_multicast:
        return "a multicast address"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError as exc:
        return (os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__).lower()
    return None


def check_ice_hosts(hosts: Sequence[str], advice: str) -> None:
    """Raises :class:`UsageError` for the first of ``hosts`` (``--ice-host``'s entries, IP
    literals) that is no address of this machine's interfaces (:func:`not_on_this_machine`):
    ``--ice-host: ADDRESS is no address of this machine's interfaces (WHY): ADVICE``, so
    ``serve`` and ``client`` refuse it alike, named as ``MEDIASERVER_ICE_HOST`` when the value
    came from it (:func:`name_sources`). Binds one UDP socket per entry, closed at once."""
    for host in hosts:
        why = not_on_this_machine(host)
        if why is not None:
            raise UsageError(f"--ice-host: {host} is no address of this machine's interfaces ({why}): {advice}")


def comma_list(item: Callable[[str], Any] = str) -> Any:
    """An argparse ``type`` for a comma-list flag (``--ice-host 10.0.0.1,10.0.0.2``): the text
    as given, once :func:`comma_entries` accepts it, so an empty or bad entry is refused as
    the flag (or its variable) is parsed, one line naming it once. A blank text is left to
    :func:`add_option`'s own refusal (``is empty: give a value``). Read the value with
    :func:`comma_values` (with the same ``item``)."""

    def convert(text: str) -> str:
        if not is_blank(text):
            try:
                comma_entries(text, item)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    convert.__name__ = "comma list"
    return convert


def comma_values(values: Union[None, str, Sequence[str]],
                 item: Callable[[str], Any] = str) -> list[Any]:
    """The entries of a comma-list flag's value, in order: one text, or a repeatable flag's
    texts (``action="append"``, each a comma list); ``[]`` for None (the flag not given).
    ValueError as :func:`comma_entries` (a Namespace built without the parser)."""
    if values is None:
        return []
    texts = [values] if isinstance(values, str) else list(values)
    return [x for text in texts for x in comma_entries(text, item)]


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url(text: str) -> str:
    """An argparse ``type`` for a Redis URL: ``foo://x`` is refused as the flag is parsed, not
    by redis-py once the server listens (a ValueError traceback, exit 1)."""
    if not text.startswith(REDIS_SCHEMES) or text in REDIS_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"must start {', '.join(REDIS_SCHEMES)} (redis://host:6379/0), got {text!r}")
    return text


def _env_value(raw: str, kwargs: dict[str, Any], empty_means: Optional[str]) -> Any:
    """``raw`` (a variable's text) converted as the flag's value would be; ``ValueError``
    says why it is not one."""
    if is_blank(raw):
        if empty_means is not None and not raw:
            return raw
        raise ValueError("is empty: give a value, or unset the variable")
    kind = kwargs.get("action")
    if kind in ("store_true", argparse.BooleanOptionalAction):
        word = raw.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f"is not yes or no ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")
        return word in TRUE_WORDS
    convert = kwargs.get("type") or str
    try:
        value = convert(raw)
    except argparse.ArgumentTypeError as exc:   # "'x' is not a number": the caller says VAR='x'
        raise ValueError(str(exc).removeprefix(f"{raw!r} ")) from None
    except (TypeError, ValueError):
        raise ValueError(f"is not a valid {getattr(convert, '__name__', 'value')} value") from None
    choices = kwargs.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"is not one of {', '.join(map(str, choices))}")
    return [value] if kind == "append" else value   # a list, as if the flag had been given once


_CHECKED: dict[type, type] = {}


def _checked(base: type) -> type:
    """``base`` (an argparse action class) that refuses a blank value and records its dest in
    the namespace's :data:`GIVEN` set; an ``append`` whose default came from a variable starts
    from the built-in default when the flag is given (the flag wins, not both)."""
    if base not in _CHECKED:
        class Checked(base):  # type: ignore[valid-type, misc]
            def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                         values: Any, option_string: Optional[str] = None) -> None:
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, str) and is_blank(value) and \
                            (value or getattr(self, "empty_means", None) is None):
                        raise argparse.ArgumentError(
                            self, f"{value!r} is empty: give a value, or leave the flag out")
                given = getattr(namespace, GIVEN, None)
                if given is None:
                    given = set()
                    setattr(namespace, GIVEN, given)
                if self.dest not in given and getattr(self, "env_raw", None) is not None \
                        and isinstance(self, argparse._AppendAction):
                    setattr(namespace, self.dest, None)
                given.add(self.dest)
                super().__call__(parser, namespace, values, option_string)

        Checked.__name__ = f"Checked{base.__name__}"
        _CHECKED[base] = Checked
    return _CHECKED[base]


def add_option(parser: argparse.ArgumentParser, flag: str, *aliases: str,
               empty_means: Optional[str] = None, **kwargs: Any) -> argparse.Action:
    """Add ``flag`` whose default comes from its ``MEDIASERVER_*`` variable when set.

    ``aliases``: older spellings still accepted on the command line (the variable is named
    after ``flag`` only). ``empty_means``: what an empty value (``--flag ''``) does, for the
    few settings where one means something (the help says it); any other refuses it. The
    action's ``builtin_default`` keeps the default before the variable (:func:`changed_flags`);
    ``env_name``, ``env_raw`` (the variable's text or None) and ``env_problem`` (why that text
    is no value for the flag, or None: :func:`check_env`).
    """
    name = env_name(flag)
    builtin = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
    raw = os.environ.get(name)
    problem = None
    if raw is not None:
        try:
            kwargs["default"] = _env_value(raw, kwargs, empty_means)
        except ValueError as exc:
            problem = f"{name}={raw!r} {exc}"
        # a required flag is satisfied by its variable; a bad variable (empty, not a value) is
        # then reported naming it (check_env) rather than as the flag missing
        kwargs["required"] = False
    help_text = kwargs.get("help", "") + (f" ('': {empty_means})" if empty_means else "")
    kwargs["help"] = f"{help_text} [env {name}]".strip()
    kind = kwargs.get("action")
    kwargs["action"] = _checked(parser._registry_get("action", kind, kind))
    action = parser.add_argument(flag, *aliases, **kwargs)
    action.builtin_default = builtin  # type: ignore[attr-defined]
    action.env_name = name  # type: ignore[attr-defined]
    action.env_raw = raw  # type: ignore[attr-defined]
    action.env_problem = problem  # type: ignore[attr-defined]
    action.empty_means = empty_means  # type: ignore[attr-defined]
    return action


def _from_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.Action]:
    """The actions of ``parser`` whose variable is set and whose flag was not given."""
    given = getattr(args, GIVEN, set())
    return [a for a in parser._actions
            if getattr(a, "env_raw", None) is not None and a.dest not in given]


def check_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` naming every variable (in effect: its flag not given) whose
    text is no value for its flag (``MEDIASERVER_PORT='x' is not a valid int value``)."""
    problems = [a.env_problem for a in _from_env(parser, args) if a.env_problem]  # type: ignore[attr-defined]
    if problems:
        raise UsageError("; ".join(problems))


def name_sources(message: str, args: argparse.Namespace) -> str:
    """``message`` with each flag whose value came from its variable named as the variable:
    ``--asr tape`` becomes ``MEDIASERVER_ASR=tape``, a bare ``--asr`` ``MEDIASERVER_ASR``.
    ``args._parser``: the sub-command's parser (``mediaserver`` sets it); without it,
    ``message`` as it is."""
    parser = getattr(args, "_parser", None)
    if parser is None:
        return message
    for action in _from_env(parser, args):
        raw = action.env_raw  # type: ignore[attr-defined]
        for flag in action.option_strings:
            pattern = (rf"(?<![\w-]){re.escape(flag)}(?![\w-])"
                       rf"(?P<value>[ =]{re.escape(raw)}(?![^\s:;,)]))?")
            message = re.sub(pattern, lambda m: action.env_name + (  # type: ignore[attr-defined]
                f"={raw}" if m.group("value") else ""), message)
    return message


def print_problem(args: Optional[argparse.Namespace], message: str, kind: str = "error") -> None:
    """One line on stderr, ``mediaserver CMD: error: MESSAGE`` (or ``warning``), as a
    :class:`UsageError` is printed: for what a command reports and goes on (a bad file among
    several, a failure while running). Flags set by their variable are named as it."""
    parser = getattr(args, "_parser", None)
    prog = parser.prog if parser is not None else "mediaserver"
    message = " ".join(message.split())   # one line, whatever a library's reason holds
    if args is not None:
        message = name_sources(message, args)
    print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)


def no_effect(flags: list[str], needs: str) -> str:
    """The warning for ``flags`` that do nothing in this configuration: ``--a, --b have no
    effect NEEDS: ignored`` (``needs``: ``without --asr local``, ``with --no-enhance``)."""
    return f"{', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect {needs}: ignored"


def changed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> frozenset[str]:
    """The flags (first spelling) of ``parser`` whose value in ``args`` is not their built-in
    default: given on the command line or by their variable."""
    changed = set()
    for action in parser._actions:
        if not action.option_strings or not hasattr(action, "builtin_default"):
            continue
        if getattr(args, action.dest, None) != action.builtin_default:
            changed.add(action.option_strings[0])
    return frozenset(changed)
