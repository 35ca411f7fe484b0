"""Which form a dataset is read as when no field is named: TRL's column names, as TRL finds them."""

from __future__ import annotations

import pytest

from flashdist.data.lm_fields import resolve_fields


@pytest.mark.parametrize(
    ("kinds", "form", "fields"),
    [
        ({"messages": "list", "id": "int"}, "messages", {"messages_field": "messages"}),
        ({"conversations": "list"}, "messages", {"messages_field": "conversations"}),
        ({"prompt": "list", "completion": "list"}, "conversational", {"prompt_field": "prompt", "completion_field": "completion"}),
        ({"prompt": "str", "completion": "str"}, "prompt_completion", {"prompt_field": "prompt", "completion_field": "completion"}),
        ({"text": "str", "prompt": "str", "completion": "str"}, "text", {"text_field": "text"}),
        ({"text": "str", "messages": "list"}, "text", {"text_field": "text"}),
    ],
)
def test_the_form_found_when_no_field_is_named(kinds, form, fields):
    resolved = resolve_fields(kinds)
    assert resolved.form == form
    assert {name: getattr(resolved, name) for name in fields} == fields
