"""Errors a user can cause, with messages that say what to change."""


class AgentError(Exception):
    """A problem with how the agent was configured or called.

    The CLI prints its message on one line and exits non-zero.
    """
