"""Test tooling kept out of the library: `replay`, a scriptable OpenAI-compatible server.

Tests import it as `tests.support` (pytest puts the repository root on `sys.path`, see
`pythonpath` in pyproject.toml); from a checkout: `python -m tests.support.replay …`."""
