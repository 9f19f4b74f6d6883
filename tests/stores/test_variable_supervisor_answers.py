"""What the Variable store makes of the supervisor's answers to ``GetVariable`` inside a task.

``airflow.sdk.Variable.get(key, default=None)`` answers ``None`` for an execution-API error as for
a missing Variable; a keeper then takes the live record for absent and seeds over it. The store now
reads through the supervisor itself and only "not found" means no record. The answers are the
SDK's own message classes, as the supervisor sends them.
"""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time.comms import ErrorResponse, VariableResult

from airflow_provider_tokenrefresh.errors import StoreError
from airflow_provider_tokenrefresh.stores.variable import supervisor_answer_value

KEY = "tokenrefresh_token__vendor_a"


def test_a_value_is_the_record() -> None:
    answer = VariableResult(key=KEY, value='{"schema_version": 2}')
    assert supervisor_answer_value(KEY, answer) == '{"schema_version": 2}'


def test_only_not_found_means_no_record() -> None:
    assert (
        supervisor_answer_value(KEY, ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": KEY}))
        is None
    )


@pytest.mark.parametrize("error", [e for e in ErrorType if e is not ErrorType.VARIABLE_NOT_FOUND])
def test_any_other_error_is_a_store_error_naming_the_key(error: ErrorType) -> None:
    with pytest.raises(
        StoreError, match=rf"Variable '{KEY}' could not be read.*\({error.value}\).*not reading it as absent"
    ):
        supervisor_answer_value(KEY, ErrorResponse(error=error, detail={"status_code": 500}))


def test_an_unexpected_answer_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unexpected answer"):
        supervisor_answer_value(KEY, None)
