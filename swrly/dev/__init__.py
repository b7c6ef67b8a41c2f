"""Development-only code: production never imports this package.

- `sandbox`: the deterministic sandbox provider (`python -m swrly.dev.sandbox`).
- `seed_demo`: the demo workflow and token for `make run` (`python -m swrly.dev.seed_demo SLUG`).
- `devstack`: `make run` (`python -m swrly.dev.devstack`); `prepare`: its checks, migrations and
  demo tenant, in one quiet process; `runtime`: its runtime file (`.swrly/runtime.env`), which
  the settings read only with DEBUG on.
- `pytest_plugin`: the test session's environment (pyproject's `addopts = -p ...`).

tests/test_structure.py checks that importing the production settings and every runtime
module leaves this package unimported (the settings import `runtime` only with DEBUG on).
"""
