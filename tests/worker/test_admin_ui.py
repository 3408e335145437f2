"""The Admin UI's password check; the UI itself is tested live in test_dashboard.py."""

from __future__ import annotations

from worker.admin_ui import password_matches


def test_the_password_is_required_and_the_username_is_not_checked() -> None:
    assert password_matches({"username": "admin", "password": "s3cret"}, "s3cret")
    assert password_matches({"username": "anyone", "password": "s3cret"}, "s3cret")
    assert not password_matches({"username": "admin", "password": "wrong"}, "s3cret")
    assert not password_matches({"username": "admin"}, "s3cret")
    assert not password_matches(None, "s3cret")
    assert not password_matches({"password": 123}, "s3cret")
    assert not password_matches({"password": ""}, "")  # never an open UI
