"""Small helpers shared by the tests."""

from agent import tool
from agent.testing import call  # noqa: F401 - the tests import it from here


def types(events) -> list[str]:
    return [e.type for e in events if e.type != "model_delta"]


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
