"""Tests of the runs app: provider clients, the sandbox provider."""
