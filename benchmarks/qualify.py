"""`python -m benchmarks.qualify --json`: run the whole qualification matrix (fault injection on a real
treatment against orconsole-sim, crash recovery, codec fuzzing, hostile input and security tests) and write
the evidence table docs/qualification.md. Prints the rows as JSON with --json.

It reports what happened; it never edits a result, and a failing row stays in the table as FAIL.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "qualification.md"

# Claims about input handling and security, and the tests that show them (ours and the owners' suites).
EVIDENCE_TESTS: list[tuple[str, str]] = [
    ("prescription entry: only exactly the protocol dose is accepted",
     "tests/qualification/test_hostile_input.py::test_prescription_entry_accepts_only_exactly_the_protocol_dose"),
    ("configuration file errors name file, line and field; nothing half-loaded",
     "tests/qualification/test_hostile_input.py::test_configuration_errors_name_file_line_and_field_and_load_nothing"),
    ("calibration file errors name file, line and field; nothing imported",
     "tests/qualification/test_hostile_input.py::test_calibration_errors_name_file_line_and_field_and_import_nothing"),
    ("patient fields with control characters, long strings, SQL and markup are stored and exported verbatim",
     "tests/qualification/test_hostile_input.py::test_hostile_patient_fields_are_stored_and_exported_verbatim"),
    ("a NUL character in a patient field is refused with a reason, never stripped",
     "tests/qualification/test_hostile_input.py::test_a_nul_character_in_a_patient_field_is_refused_with_a_reason_never_stripped"),
    ("markup in a patient field is escaped in the printed report",
     "tests/qualification/test_hostile_input.py::test_hostile_patient_fields_are_escaped_not_interpreted_in_the_printed_report"),
    ("electrometer garbage reply raises, never becomes a reading",
     "tests/drivers/test_unidos_driver.py::test_garbage_reply_raises_reply_garbled"),
    ("electrometer reply to the wrong command raises", "tests/drivers/test_unidos_driver.py::test_wrong_reply_raises_reply_mismatch"),
    ("a late electrometer reply is discarded, never taken for the next request",
     "tests/drivers/test_unidos_driver.py::test_a_late_reply_is_discarded_never_taken_for_the_next_request"),
    ("codecs: 20 000 random and mutated frames per codec (CI count)", "tests/qualification/test_codec_fuzzing.py"),
    ("a therapist cannot approve a plan (identity service and signing layer)",
     "tests/logs/test_identity.py::test_therapist_cannot_approve_a_plan_through_the_identity_service"),
    ("a therapist cannot approve a plan by calling the signing layer",
     "tests/logs/test_identity.py::test_therapist_cannot_approve_a_plan_even_by_calling_the_signing_layer_directly"),
    ("a locked-out user cannot sign", "tests/qualification/test_hostile_input.py::test_a_locked_out_user_cannot_sign"),
    ("a signature re-attributed to another user fails verification",
     "tests/logs/test_identity.py::test_signature_reattributed_to_another_user_fails_verification"),
    ("a signature moved to another record fails verification",
     "tests/logs/test_identity.py::test_signature_moved_to_another_record_fails_verification"),
    ("an edited audit entry is detected and named", "tests/logs/test_store.py::test_edited_audit_entry_is_detected_and_named"),
    ("a deleted audit entry is detected", "tests/logs/test_store.py::test_deleted_audit_entry_is_detected_and_named"),
    ("an inserted audit entry is detected", "tests/logs/test_store.py::test_inserted_audit_entry_is_detected"),
    ("10: the Qt GUI thread stalls 5 s during beam: polling and journal go on, the beam stops on time",
     "tests/ui/test_treatment_screen.py::test_a_five_second_gui_stall_during_beam_changes_nothing"),
    ("link lost during beam: continuation and signature refused until the unit's counter is read after Reconnect",
     "tests/treatment/test_link_loss_record.py"),
    ("late or retransmitted status replies trip neither the dose-rate nor the channel-agreement interlock",
     "tests/core/test_rate_window_delays.py"),
    ("a retransmitted beam on does not make the console's timer end the beam late",
     "tests/core/test_beam_on_retransmission.py"),
]


def run_evidence_tests() -> list[dict]:
    """Run the evidence tests once (SQLite only) and report each claim's outcome from the JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        nodes = sorted({node for _, node in EVIDENCE_TESTS})
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not postgres",
                        f"--junitxml={xml}", *nodes], cwd=REPO, env=env, capture_output=True, text=True)
        results: dict[str, list[str]] = {}
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
                name = case.get("name", "")
                outcome = "passed"
                for child in case:
                    if child.tag in ("failure", "error"):
                        outcome = "failed"
                    elif child.tag == "skipped":
                        outcome = "xfail" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
                results.setdefault(f"{file}::{name.split('[')[0]}", []).append(outcome)
                results.setdefault(file, []).append(outcome)
    rows = []
    for claim, node in EVIDENCE_TESTS:
        outcomes = results.get(node, [])
        xfails = outcomes.count("xfail")
        result = ("NOT RUN" if not outcomes else
                  "FAIL" if any(o not in ("passed", "xfail") for o in outcomes) else
                  "PASS" + (f", {xfails} known gap(s) marked xfail" if xfails else ""))
        rows.append({"claim": claim, "test": node, "result": result, "cases": len(outcomes)})
    return rows


def _fmt(value, fmt: str, none: str = "—") -> str:
    return none if value is None else format(value, fmt)


def _cell(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _observed_gaps(rows: list[dict]) -> list[str]:
    """Summary bullets for gaps that rows of this run actually reported (never a stale claim)."""
    def having(words: str) -> list[str]:
        return [r["scenario"] for r in rows if any(words in g for g in r["gaps"])]
    bullets = []
    hit = having("interlock_changes lacks")
    if hit:
        bullets.append(f"- **Delivery report** (rows {', '.join(hit)}): when the unit ends the beam itself, the "
                       "DeliveryReport is emitted before `_track_interlocks()` runs, so its `interlock_changes` lacks "
                       "the interlock that ended the delivery (the termination detail names the event).")
    hit = having("wall clock jumped")
    if hit:
        bullets.append(f"- **Wall clock** (rows {', '.join(hit)}): a ±1 h jump shifts the UTC stamps of the beam "
                       "session and nothing flags it (monotonic timing is unaffected).")
    hit = having("under-dosed by up to")
    if hit:
        bullets.append(f"- **Power loss** (rows {', '.join(hit)}): the unit's counters are lost; the TreatmentService "
                       "assumes the journal's dose plus the most the beam could have given unjournalled — never an "
                       "overdose, but an under-dose of up to that margin, and the record's session 1 is an upper "
                       "bound, not a measurement.")
    return bullets


def render(rows: list[dict], fuzz: dict, evidence: list[dict], meta: dict) -> str:
    from tests.qualification.matrix import KNOWN_GAPS, MATRIX
    ci = [e.id for e in MATRIX if e.ci]
    out = [
        "# Qualification evidence",
        "",
        f"Generated by `python -m benchmarks.qualify` on {meta['utc']} (commit {meta['commit']}, seed {meta['seed']}, "
        f"{meta['machine']}); {meta['seconds']:.0f} s. **Do not edit by hand**: rerun the command.",
        "",
        "Every fault row runs a real 20 Gy treatment: the Supervisor with the real `XrsDriver` drives `orconsole-sim "
        "bench --pty` in a separate process over a pseudo-terminal (the fast ×60 test source), and the fault is "
        "injected at a seeded random moment during beam on (`--fault KIND@SECONDS`, counted from the first beam on). "
        "Where the beam ends early, the remainder is planned as a CONTINUATION from the dose read back from the unit, "
        "approved and delivered, and the total must end at 20 Gy ± 1 %.",
        "",
        "## Summary",
        "",
        f"{sum(r['passed'] for r in rows)} of {len(rows)} fault rows pass; "
        f"{sum(1 for r in rows if r['gaps'])} pass or fail with a gap noted. Rows failing: "
        + (", ".join(f"**{r['scenario']}**" + (" (known gap)" if r['scenario'] in KNOWN_GAPS else "")
                     for r in rows if not r['passed']) or "none") + ".",
        "",
        "Safety gaps this suite found (details per row below):",
        "",
        *[f"- **{', '.join(sid for sid, t in KNOWN_GAPS.items() if t == text)}**: {text}"
          for text in dict.fromkeys(KNOWN_GAPS.values())],
        *_observed_gaps(rows),
        "- **Simulator**: orconsole-sim has no control channel to clear a fault or unplug/replug its port (row 3 "
        "unplugs at the console's end), and no fault that corrupts the IRM alone. Rows 6a2/6b/6c/7 schedule their "
        "output changes in the model (tests/qualification/sim_child.py) for an exact fraction and duration.",
        "- **UNIDOS link**: no checksum; see the fuzzing table for how often a mutated reply decodes to another "
        "value.",
        "",
        "## Fault injection and crash recovery",
        "",
        "| scenario | fault (at s after beam on) | result | beam-off latency (bound) | max overshoot | delivered first / total (unit IRM) | console showed | recorded | continuation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        result = "PASS" if r["passed"] else ("FAIL (known gap)" if r["scenario"] in KNOWN_GAPS else "FAIL")
        if r["passed"] and r["gaps"]:
            result = "PASS, gap noted"
        latency = (f"{_fmt(r['beam_off_latency_s'], '.3f')} s ("
                   + (f"{r['latency_bound_s']:.3f} s: " if r["latency_bound_s"] is not None else "no bound: ")
                   + f"{r['bound_basis']})" if r["beam_off_latency_s"] is not None else
                   ("—" if not r["bound_basis"] else f"— ({r['bound_basis']})"))
        overshoot = "—" if r["max_overshoot_fraction"] is None else f"{r['max_overshoot_fraction'] * 100:+.2f} %"
        dose = f"{_fmt(r['delivered_first_gy'], '.3f')} / {_fmt(r['delivered_total_gy'], '.3f')} Gy"
        out.append(f"| {r['scenario']}: {_cell(r['title'], 80)} | {_cell(r['fault'], 60)} "
                   f"({_fmt(r['fault_at_s'], '.2f')}) | {result} | {latency} | {overshoot} | {dose} | "
                   f"{_cell(r['console_message'])} | {_cell(r['recorded'])} | {_cell(r['continuation'] or '—')} |")
    out += ["", "### Failures and gaps, row by row", ""]
    for r in rows:
        items = [f"FAIL: {f}" for f in r["failures"]] + [f"gap: {g}" for g in r["gaps"]] + [f"note: {n}" for n in r["notes"]]
        if items:
            out.append(f"- **{r['scenario']}**")
            out += [f"  - {_cell(i, 600)}" for i in items]
    x, u = fuzz.get("xrs", {}), fuzz.get("unidos", {})
    out += [
        "",
        "## Codec fuzzing",
        "",
        "| codec | frames / lines | crashes | corrupt accepted | bound | beam switched on | result |",
        "|---|---|---|---|---|---|---|",
    ]
    if x:
        accepted = x["accepted_random"] + x["accepted_mutated_changed"]
        out.append(f"| XRS (`protocol.xrs.StreamDecoder`, CRC-32) | {x['frames']} ({x['random']} random, {x['mutated']} "
                   f"mutated) | {x['crashes']} | {accepted} | {x['crc_bound_expected_accepts']:.1e} expected (2^-32 "
                   f"per corrupt frame); limit {x['accept_limit']} | {x['unit_beam_switched_on']} (accepted corrupt "
                   f"frames fed to a unit armed with another plan hash) | {'PASS' if not x['problems'] else 'FAIL: ' + '; '.join(x['problems'])} |")
    if u:
        out.append(f"| UNIDOS (`protocol.unidos.decode_reply`, no checksum) | {u['lines']} (random, mutated, wrong "
                   f"command, truncated) | {u['crashes']} | {u['accepted_changed_value']} mutated replies decoded to "
                   f"another value ({u['changed_value_rate_of_mutated'] * 100:.1f} % of mutated) | none: the ASCII "
                   f"line has no checksum | n/a | {'PASS (no crash, wrong-command replies refused)' if not u['problems'] else 'FAIL: ' + '; '.join(u['problems'])} |")
    out += [
        "",
        "## Hostile input and security",
        "",
        "| claim | test | result |",
        "|---|---|---|",
    ]
    for e in evidence:
        out.append(f"| {e['claim']} | `{e['test']}` | {e['result']} ({e['cases']} case(s)) |")
    out += [
        "",
        "## Method notes",
        "",
        "- **Latency.** Device-detected faults and console-detected ones: from the model's `fault_injected` event to "
        "its `beam_off` event, both on the unit's clock. Unplug and SIGKILL: from the act to the arrival of the "
        "unit's `beam_off` event on the host's monotonic clock (includes the event pipe, so it is an upper bound).",
        "- **Bounds.** A fault the unit detects itself: 0.05 s (HV off in the same 1 ms tick, plus scheduling). Link "
        "silence, a bad line, an unplugged port or a dead console: the unit's 0.5 s heartbeat watchdog + one 50 ms "
        "poll (+ 0.05 s). Dose rate: the Supervisor's 1 s IRM rate window + 2 polls. Channel disagreement has no "
        "time bound (an integral check, |primary − IRM| > 5 % + 0.2 Gy); its criterion is the overshoot.",
        "- **Overshoot** is (unit IRM total − 20 Gy) / 20 Gy over the faulted session and its continuation; it must "
        "stay ≤ +0.5 %. A negative value is an underdose (a terminated session without continuation).",
        "- **Unplug (3).** `/dev/null` is `dup2()`'d onto the driver's open port descriptor: the fd number stays "
        "valid (no reuse race), reads fail exactly as pyserial reports an unplugged adapter (\"device reports "
        "readiness to read but returned no data\"), writes reach nobody, and the simulator sees its host side close. "
        "Killing and restarting the simulator would be a power cycle of the unit (counters lost), not an unplug. "
        "Plugging back is `XrsDriver.reconnect()` on the same path.",
        "- **Faults the simulator's command line cannot express** (a 15 % or 8 % output step at constant tube "
        "current, rows 6a2 and 7; the drifts of rows 6b/6c) run on the same bench in its own process on ptys "
        "(tests/qualification/sim_child.py: `Bench.serve_pty` + `XrsModel.schedule_fault`, importing only "
        "simulators/). `output_drop` (row 6a) also lowers the tube current read-back, so the 5 % µA interlock stops "
        "it before the 10 % dose-rate interlock can.",
        "- **Continuation.** `reset`: same unit after its latched fault is reset with an acknowledgement. `fresh`: "
        "the unit's fault cannot be cleared from outside a separate simulator process (no control channel), so the "
        "remainder runs on a new simulator process with the same source serial (the unit after service).",
        "- **Crash scenarios (8, 12).** Supervisor level: the console runs in its own process "
        "(`tests/qualification/console_child.py`) and prints every journal fsync; after SIGKILL the journal must hold "
        "at least every fsync'd byte and parse without problems, and the restarted console must find the treatment "
        "unfinished and read the unit's counters. TreatmentService level (`-service` rows): `orconsole demo "
        "--headless` (store, signed plan and approvals, checklist, record draft) is killed during beam on and "
        "`orconsole demo --headless --recover` recovers, plans the continuation into the same record, delivers and "
        "signs it; the record must verify and hold two sessions. Power loss kills the console, then the unit, "
        "without waiting in between; the unit comes back with fresh counters.",
        "- Rows 1–7, 10 and 11 qualify the Supervisor with the real driver; the record there is the journal and "
        "the Supervisor's DeliveryReport (what the TreatmentService writes into the delivery record). Row 9 checks "
        "the Supervisor's record-store interlock only; completing a record once the store is back is not yet "
        "qualified.",
        "",
        "## What CI runs",
        "",
        f"`make test` runs tests/qualification/: the fault rows {', '.join(ci)} (≈ 3.5 minutes on 2 cores), "
        "20 000 frames per codec (test_codec_fuzzing.py), and the hostile-input tests. Rows with a known safety gap "
        f"({', '.join(KNOWN_GAPS) or 'none'}) are marked xfail(strict=True): CI fails as soon as they pass, so the "
        "marker is removed when the gap is fixed. `python -m benchmarks.qualify` runs every row above and 100 000 "
        "frames per codec.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.qualify", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault times (default 1)")
    parser.add_argument("--only", nargs="*", help="scenario ids to run (default: all)")
    parser.add_argument("--frames", type=int, default=100_000, help="fuzz frames per codec (default 100000)")
    parser.add_argument("--no-evidence-tests", action="store_true", help="skip the hostile-input/security tests")
    parser.add_argument("--doc", default=str(DOC), help="where to write the evidence table ('-' for none)")
    parser.add_argument("--from-json", metavar="FILE", help="re-render the table from an earlier --json output")
    parser.add_argument("--rerun-evidence", action="store_true", help="with --from-json: run the evidence tests again")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        if args.rerun_evidence:
            earlier["evidence"] = run_evidence_tests()
        Path(args.doc).write_text(render(earlier["rows"], earlier["fuzz"], earlier["evidence"], earlier["meta"]),
                                  encoding="utf-8")
        return 0 if earlier["passed"] else 1
    from tests.qualification.fuzzing import fuzz_unidos, fuzz_xrs, unidos_claims_hold, xrs_claims_hold
    from tests.qualification.matrix import MATRIX, run_entry

    started = time.monotonic()
    real_stdout = os.dup(1)
    if args.json:                 # device-driver logs go to stdout: keep it for the JSON alone
        sys.stdout.flush()
        os.dup2(2, 1)
    rows = []
    for entry in MATRIX:
        if args.only and entry.id not in args.only:
            continue
        print(f"qualify: {entry.id} …", file=sys.stderr, flush=True)
        row = run_entry(entry, args.seed).to_json()
        print(f"qualify: {entry.id}: {'PASS' if row['passed'] else 'FAIL'} in {row['duration_s']} s", file=sys.stderr,
              flush=True)
        rows.append(row)
    fuzz = {}
    if args.frames > 0:
        x = fuzz_xrs(args.frames)
        x["problems"] = xrs_claims_hold(x)
        u = fuzz_unidos(args.frames)
        u["problems"] = unidos_claims_hold(u)
        fuzz = {"xrs": x, "unidos": u}
    evidence = [] if args.no_evidence_tests else run_evidence_tests()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    meta = {"utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit, "seed": args.seed,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}", "seconds": time.monotonic() - started}
    if args.doc != "-":
        Path(args.doc).write_text(render(rows, fuzz, evidence, meta), encoding="utf-8")
    result = {"meta": meta, "rows": rows, "fuzz": fuzz, "evidence": evidence,
              "passed": all(r["passed"] for r in rows) and not any(v.get("problems") for v in fuzz.values())
              and all(e["result"].startswith("PASS") for e in evidence)}
    if args.json:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        print(json.dumps(result, indent=2, default=str))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
