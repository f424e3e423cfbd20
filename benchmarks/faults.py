"""Replays the faults a user can cause as real `kdistill` processes and records how each ended (issue: exit 2, one line, no traceback).

Every case (`fault_cases.py`, `fault_cases_more.py`, `fault_cases_reliability3.py`) runs the installed CLI in a
subprocess, in its own folder of a work directory, on small models made here and
the real Fashion-MNIST sample in tests/data. For each it records the command, the
exit status, stderr's non-empty lines (`kdistill: ...` log lines counted apart),
whether a traceback appeared, the last stderr line, and what the run left behind
in its folder (new or changed paths the case does not expect), then a verdict: ok
when the status is the expected one (2; 130 for Ctrl-C; 0 for the success cases),
exactly one line besides the log lines, no traceback, the expected words in that
line, nothing left behind, and the case's own check (a resumed run finishing, ...).

    python benchmarks/faults.py                                   # every case, ~14 min on 2 CPU cores
    python benchmarks/faults.py --cases yaml_list,json_syntax --out /tmp/faults
Writes <out>/faults_<name>.json and <out>/faults.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import fault_cases  # beside this script (on sys.path when it runs; tests/test_faults.py prepends the folder)
import fault_cases_more  # noqa: F401  (registers its cases)
import fault_cases_reliability3  # noqa: F401  (registers its cases)

TAIL = 20  # stderr/stdout lines kept per case in the JSON
USER_ENVIRONMENT = dict(os.environ)  # what the kdistill processes get (this process quiets TensorFlow for itself)


def kdistill_command() -> list:
    """The console script beside this Python (as tests/test_survive.py starts it), else `python -m kdistill.cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "kdistill")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "kdistill.cli"]


# === Running one case ===
def _snapshot(folder: str) -> dict:
    """Relative path -> (size, mtime) of every file, None for every folder, under `folder` (symlinks not followed)."""
    found = {}
    for parent, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(parent, name)
            status = os.lstat(path)
            found[os.path.relpath(path, folder)] = None if os.path.isdir(path) else (status.st_size, status.st_mtime_ns)
    return found


def _differences(before: dict, after: dict, allowed: tuple) -> tuple[list, list]:
    """(new paths, changed or removed paths) outside `allowed`; a new folder is named once, not with its contents."""

    def unexpected(path):
        return not any(fnmatch.fnmatch(path, pattern) for pattern in allowed)

    new = [path for path in sorted(set(after) - set(before)) if unexpected(path)]
    new = [path for path in new if os.path.dirname(path) not in new]
    changed = [
        path for path in sorted(before) if (path not in after or after[path] != before[path]) and unexpected(path)
    ]
    return new, changed


def _outcome(process_rc: int, out: str, err: str, seconds: float) -> dict:
    lines = [line for line in err.splitlines() if line.strip()]
    log = [line for line in lines if line.startswith("kdistill: ")]
    return {
        "rc": process_rc,
        "stderr_lines": len(lines),
        "log_lines": len(log),
        "message_lines": len(lines) - len(log),
        "traceback": "Traceback" in err,
        "last_line": lines[-1] if lines else "",
        "seconds": round(seconds, 1),
        "stderr_tail": "\n".join(lines[-TAIL:]),
        "stdout_tail": "\n".join(out.splitlines()[-TAIL:]),
    }


def _run(command: list, here: str, env: dict, timeout: float) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=here, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out, err = (
            text.decode() if isinstance(text, bytes) else text or "" for text in (expired.stdout, expired.stderr)
        )
        return dict(_outcome(-1, out, err, time.perf_counter() - start), timed_out=True)
    return _outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def _start(command: list, here: str, env: dict, name: str) -> tuple:
    """A process in the background whose stdout and stderr go to files beside the case folder (a pipe could fill and block it)."""
    out, err = (
        open(os.path.join(os.path.dirname(here), f".{os.path.basename(here)}.{name}.{kind}"), "w+")
        for kind in ("out", "err")
    )
    return subprocess.Popen(command, cwd=here, env=env, stdout=out, stderr=err, text=True), out, err


def _finish(started: tuple, start: float, timeout: float) -> dict:
    process, out, err = started
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    texts = []
    for handle in (out, err):
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
        os.remove(handle.name)
    return dict(_outcome(process.returncode, texts[0], texts[1], time.perf_counter() - start), pid=process.pid)


def _wait_for(path: str, process, timeout: float) -> bool:
    deadline = time.time() + timeout
    while not os.path.exists(path) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    return os.path.exists(path) and process.poll() is None


def _interrupt(case, command: list, here: str, env: dict, timeout: float, before: dict) -> dict:
    """SIGINT once `case.wait_for` exists (an epoch is backed up), then the same command again, which must finish (rc 0)."""
    start, started = time.perf_counter(), _start(command, here, env, "first")
    sent = _wait_for(os.path.join(here, case.wait_for), started[0], timeout)
    if sent:
        time.sleep(case.settle)  # into the next epoch
        sent = started[0].poll() is None
        started[0].send_signal(signal.SIGINT)
    result = dict(_finish(started, start, timeout), signal_sent=sent)
    result["left_for_resume"] = sorted(set(_snapshot(here)) - set(before))
    again = _run(command, here, env, timeout)
    result.update(resume_rc=again["rc"], resume_seconds=again["seconds"], resume_last_line=again["last_line"])
    return result


def _concurrent(case, command: list, here: str, env: dict, timeout: float, before: dict) -> dict:
    """The same command twice: the second starts once the first holds the lock; the second's ending is the case's, the first must finish."""
    start, started = time.perf_counter(), _start(command, here, env, "first")
    holding = _wait_for(os.path.join(here, case.wait_for), started[0], timeout)
    second = _run(command, here, env, timeout)
    first_running = started[0].poll() is None
    first = _finish(started, start, timeout)
    return dict(
        second,
        first_pid=first["pid"],
        first_rc=first["rc"],
        first_last_line=first["last_line"],
        first_seconds=first["seconds"],
        first_held_lock=holding,
        first_still_running=first_running,
    )


def run_case(name: str, inputs, work: str, timeout: float) -> dict:
    """Builds case `name` in `<work>/<name>`, runs it, and returns its record with the verdict."""
    item, what, builder = fault_cases.CASES[name]
    here = os.path.join(work, name)
    os.makedirs(here)
    case = builder(inputs, here)
    env = dict(USER_ENVIRONMENT, KDISTILL_OFFLINE="1", **case.env)
    command = kdistill_command() + case.argv
    record = {
        "name": name,
        "item": item,
        "what": what,
        "command": "kdistill " + shlex.join(case.argv),
        "env": case.env,
        "note": case.note,
    }
    if case.setup is not None:
        setup = _run(kdistill_command() + case.setup, here, env, timeout)
        record["setup"] = {
            "command": "kdistill " + shlex.join(case.setup),
            "rc": setup["rc"],
            "last_line": setup["last_line"],
        }
    before = _snapshot(here)
    if case.mode == "plain":
        record.update(_run(command, here, env, timeout))
    else:
        record.update(
            {"interrupt": _interrupt, "concurrent": _concurrent}[case.mode](case, command, here, env, timeout, before)
        )
    record["left_behind"], record["changed"] = _differences(before, _snapshot(here), case.allowed)
    record["problems"] = problems(case, record, here)
    record["verdict"] = "ok" if not record["problems"] else "; ".join(record["problems"])
    return record


def problems(case, record: dict, here: str) -> list:
    """What keeps the ending from being a good one (empty: ok)."""
    found = [] if record["rc"] == case.expect_rc else [f"rc {record['rc']}, expected {case.expect_rc}"]
    if record.get("timed_out"):
        found.append("timed out")
    if case.expect_rc != 0 and record["message_lines"] != 1:
        found.append(f"{record['message_lines']} lines besides the log, expected 1")
    if record["traceback"]:
        found.append("traceback")
    where = record["last_line"] if case.expect_rc != 0 else record["stderr_tail"]
    expected = [text.format(first_pid=record.get("first_pid")) for text in case.expect]
    found += [f"the line lacks {text!r}" for text in expected if text not in where]
    found += [f"left behind: {', '.join(record['left_behind'])}"] if record["left_behind"] else []
    found += [f"changed or removed: {', '.join(record['changed'])}"] if record["changed"] else []
    if case.max_seconds is not None and record["seconds"] > case.max_seconds:
        found.append(f"took {record['seconds']} s (> {case.max_seconds} s)")
    if case.mode == "interrupt":
        found += [] if record["signal_sent"] else ["no epoch was backed up before the run ended: SIGINT not sent"]
        found += (
            []
            if record["resume_rc"] == 0
            else [f"the same command again ended with rc {record['resume_rc']}: {record['resume_last_line']}"]
        )
    if case.mode == "concurrent":
        found += (
            []
            if record["first_held_lock"] and record["first_still_running"]
            else ["the first run was not running when the second ended"]
        )
        found += (
            []
            if record["first_rc"] == 0
            else [f"the first run ended with rc {record['first_rc']}: {record['first_last_line']}"]
        )
    return found + (case.check(record, here) if case.check is not None else [])


# === Reports ===
def markdown(records: list, command: str, seconds: float) -> str:
    ok = sum(record["verdict"] == "ok" for record in records)
    lines = [
        f"Produced by `{command}` ({platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
        f"{seconds:.0f} s wall).",
        "",
        f"**{len(records)} cases: {ok} ok, {len(records) - ok} not ok.** Verdict ok: the expected exit status (2; 130 for Ctrl-C; "
        "0 for the success cases), one line besides `kdistill:` log lines, no traceback, the expected words, nothing left behind, "
        "and the case's own check (a Ctrl-C'd run resumes and finishes; the first of two runs finishes).",
        "",
        "| # | item | case | rc | stderr lines (log) | traceback | left behind | s | verdict | last stderr line |",
        "|---:|---|---|---:|---:|---|---|---:|---|---|",
    ]
    for number, record in enumerate(records, start=1):
        left = ", ".join(record["left_behind"] + record["changed"]) or "-"
        cells = [
            str(number),
            record["item"],
            f"`{record['name']}`",
            str(record["rc"]),
            f"{record['stderr_lines']} ({record['log_lines']})",
            "yes" if record["traceback"] else "no",
            left,
            f"{record['seconds']:.1f}",
            record["verdict"],
            record["last_line"],
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "Commands (run in each case's folder; `../inputs` holds the small models, `../inputs/data` the tests/data sample):",
        "",
    ]
    lines += [
        f"- `{record['name']}`: {record['what']}: `{_env_prefix(record)}{record['command']}`"
        + (f" ({record['note']})" if record["note"] else "")
        for record in records
    ]
    return "\n".join(lines) + "\n"


def _env_prefix(record: dict) -> str:
    return "".join(f"{key}={value} " for key, value in record["env"].items())


def _known_cases(text: str) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()] if text else list(fault_cases.CASES)
    unknown = [name for name in names if name not in fault_cases.CASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(fault_cases.CASES)}")
    return names


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=_known_cases, default="", help="comma-separated case names (default: all)")
    parser.add_argument("--out", help="results folder (default: benchmarks/results, for a run of every case only)")
    parser.add_argument("--name", default="cli", help="the JSON is <out>/faults_<name>.json")
    parser.add_argument("--work-dir", help="where the cases run (kept; default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per kdistill command")
    args = parser.parse_args(argv)
    names = args.cases or list(fault_cases.CASES)
    if args.out is None and args.cases:
        parser.error("--cases runs a subset: pass --out DIR (benchmarks/results holds the run of every case)")
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    work = os.path.abspath(args.work_dir) if args.work_dir else tempfile.mkdtemp(prefix="kdistill-faults-")
    taken = [name for name in names if os.path.exists(os.path.join(work, name))]
    if taken:
        parser.error(f"{work} already holds case folder(s) {', '.join(taken)}; pass an empty --work-dir")
    start, records = time.perf_counter(), []
    # for the models made here; the kdistill processes get USER_ENVIRONMENT
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started in the background (`... &`), SIGINT is ignored, and every child inherits that: Ctrl-C would do
        # nothing. The kdistill processes get what a terminal gives them.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        inputs = fault_cases.Inputs(os.path.join(work, "inputs"))
        for name in names:
            records.append(run_case(name, inputs, work, args.timeout))
            print(
                f"{name}: rc {records[-1]['rc']}, {records[-1]['seconds']:.1f} s, {records[-1]['verdict']}", flush=True
            )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/faults.py", *given])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"faults_{args.name}.json"), "w") as handle:
        json.dump({"command": command, "seconds": round(seconds, 1), "cases": records}, handle, indent=2)
    with open(os.path.join(args.out, "faults.md"), "w") as handle:
        handle.write(markdown(records, command, seconds))
    ok = sum(record["verdict"] == "ok" for record in records)
    print(
        f"{len(records)} cases: {ok} ok, {len(records) - ok} not ok; {seconds:.0f} s; {os.path.join(args.out, 'faults.md')}"
    )
    return 0 if ok == len(records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
