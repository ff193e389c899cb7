"""Acknowledging a QA warning is an electronic signature "acknowledged QA warning" with the physicist's
password re-entered; in the record store an unsigned acknowledgement never clears the source."""
from __future__ import annotations

import pytest

from logs.signing import MEANING_KINDS, MEANING_ROLES, Meaning, Role
from logs.store import Store
from orconsole.identity import AuthenticationError, PermissionDenied
from orconsole.models import QaOutcome
from orconsole.qa import OutputCheckRequest, StoreQaRepository, acknowledge_warning, output_check_gate
from tests.logs.helpers import PASSWORDS, make_cast
from tests.qa.fakes import World
from tests.qa.test_output_check_fake import TODAY, make_check


def test_the_meaning_is_reserved_to_physicists_and_qa_acknowledgements():
    assert Meaning.ACKNOWLEDGED_QA_WARNING.value == "acknowledged QA warning"
    assert MEANING_ROLES[Meaning.ACKNOWLEDGED_QA_WARNING] == frozenset({Role.MEDICAL_PHYSICIST})
    assert MEANING_KINDS[Meaning.ACKNOWLEDGED_QA_WARNING] == frozenset({"qa_acknowledgement"})


@pytest.fixture
def warning_in_store(tmp_path):
    check, _, _ = make_check(World(output_fraction=1.025))
    record = check.run(OutputCheckRequest("20", "101.325", performed_by="pia"))
    assert record.result is QaOutcome.WARNING
    with Store(f"sqlite:///{tmp_path / 'ack.sqlite3'}") as store:
        cast = make_cast(store)
        repo = StoreQaRepository(store)
        repo.save(record)
        cast.ids.sign(cast.physicist, PASSWORDS["pia"], record.qa_id, Meaning.PERFORMED_QA)
        yield store, cast, repo, record


def gate(repo):
    return output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)


def test_a_signed_acknowledgement_clears_the_warning_and_is_stored_with_its_meaning(warning_in_store):
    store, cast, repo, record = warning_in_store
    assert not gate(repo).allowed and "acknowledge" in gate(repo).reason
    acknowledge_warning(repo, record.qa_id, physicist="pia", comment="holder re-seated, T/P re-read",
                        sign=lambda doc_id: cast.ids.sign(cast.physicist, PASSWORDS["pia"], doc_id,
                                                          Meaning.ACKNOWLEDGED_QA_WARNING))
    assert gate(repo).allowed and gate(repo).qa_result.acknowledged
    ack_doc = store.find_documents(kind="qa_acknowledgement", subject="XRS-TEST-1")[-1]
    sigs = store.signatures_for(ack_doc.doc_id)
    assert [(s.meaning, s.printed_name) for s in sigs] == [("acknowledged QA warning", "Dr. Pia Physicist")]
    assert ack_doc.data["comment"] == "holder re-seated, T/P re-read"


def test_a_wrong_password_leaves_the_source_blocked_and_the_acknowledgement_may_be_repeated(warning_in_store):
    _, cast, repo, record = warning_in_store
    with pytest.raises(AuthenticationError):
        acknowledge_warning(repo, record.qa_id, physicist="pia", comment="checked",
                            sign=lambda d: cast.ids.sign(cast.physicist, "wrong", d, Meaning.ACKNOWLEDGED_QA_WARNING))
    assert not gate(repo).allowed
    acknowledge_warning(repo, record.qa_id, physicist="pia", comment="checked",
                        sign=lambda d: cast.ids.sign(cast.physicist, PASSWORDS["pia"], d,
                                                     Meaning.ACKNOWLEDGED_QA_WARNING))
    assert gate(repo).allowed


def test_a_therapist_cannot_sign_an_acknowledgement(warning_in_store):
    _, cast, repo, record = warning_in_store
    with pytest.raises(PermissionDenied):
        acknowledge_warning(repo, record.qa_id, physicist="tom", comment="fine",
                            sign=lambda d: cast.ids.sign(cast.therapist, PASSWORDS["tom"], d,
                                                         Meaning.ACKNOWLEDGED_QA_WARNING))
    assert not gate(repo).allowed
