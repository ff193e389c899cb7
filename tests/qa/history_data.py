"""A month and a half of plausible QA history for one source (daily output checks with a slow drift, one
warning, one fail and its passing repeat, weekly isotropy), stored and signed as a physicist would; shared by
the trend screen, report and screenshot tests."""
from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone

from logs.signing import Meaning
from orconsole.qa import OutputCheckRequest, StoreQaRepository, acknowledge_warning, evaluate_isotropy, k_tp
from tests.logs.helpers import PASSWORDS
from tests.qa.fakes import World
from tests.qa.test_output_check_fake import make_check

SERIAL = "XRS-TEST-1"
WARNING_DAY_OFFSET = 12       # days before `today`
FAIL_DAY_OFFSET = 5


def output_fraction(offset_days: int) -> float:
    """Today's output relative to the reference: a slow −0.9 % drift with a small daily wobble."""
    return 1.0 - 0.009 * (1 - offset_days / 45) + 0.003 * math.sin(offset_days * 1.7)


def seed_history(store, cast, *, today: date, days: int = 45) -> dict:
    """Store the history; returns {'warning': qa_id, 'fail': qa_id, 'outputs': n, 'isotropy': n}."""
    repo = StoreQaRepository(store)
    out = {"outputs": 0, "isotropy": 0}
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        if day.weekday() == 6:          # no clinic on Sundays
            continue
        fractions = [output_fraction(offset)]
        if offset == WARNING_DAY_OFFSET:
            fractions = [1.0245]
        if offset == FAIL_DAY_OFFSET:
            fractions = [0.90, output_fraction(offset)]      # the source not fully inserted, then repeated
        for n, fraction in enumerate(fractions):
            at = datetime.combine(day, time(7, 30 + 10 * n), tzinfo=timezone.utc)
            check, _, _ = make_check(World(output_fraction=fraction, room_k_tp=k_tp(21.0, 100.9)))
            check.today, check.now = (lambda d=day: d), (lambda a=at: a)
            record = check.run(OutputCheckRequest("21.0", "100.9 kPa", performed_by="pia",
                                                  chamber_serial="34013-0123"))
            repo.save(record)
            out["outputs"] += 1
            if record.result.value != "fail":
                cast.ids.sign(cast.physicist, PASSWORDS["pia"], record.qa_id, Meaning.PERFORMED_QA)
            if record.result.value == "warning":
                out["warning"] = record.qa_id
                acknowledge_warning(repo, record.qa_id, physicist="pia", comment="holder re-seated, T/P re-read",
                                    now=at + timedelta(minutes=5),
                                    sign=lambda d: cast.ids.sign(cast.physicist, PASSWORDS["pia"], d,
                                                                 Meaning.ACKNOWLEDGED_QA_WARNING))
            elif record.result.value == "fail":
                out["fail"] = record.qa_id
        if day.weekday() == 0:          # isotropy on Mondays
            wobble = 0.01 * math.sin(offset)
            reading = {"plus_x": 1.0 + wobble, "minus_x": 0.99 - wobble / 2, "plus_y": 1.005, "minus_y": 0.995 + wobble,
                       "plus_z": 0.955 if 14 <= offset < 21 else 0.985}   # one Monday fails
            iso = evaluate_isotropy(reading, source_serial=SERIAL, performed_by="pia", today=day,
                                    now=datetime.combine(day, time(8, 0), tzinfo=timezone.utc))
            repo.save(iso)
            cast.ids.sign(cast.physicist, PASSWORDS["pia"], iso.qa_id, Meaning.PERFORMED_QA)
            out["isotropy"] += 1
    return out
