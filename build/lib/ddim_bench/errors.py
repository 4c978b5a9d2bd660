"""Errors meant for the user: one line saying what is wrong and how to fix it."""


class UserError(Exception):
    """A one-line message for the user (bad config value, missing file, unreadable checkpoint)."""
