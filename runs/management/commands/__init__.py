"""`sandbox-provider`: the deterministic local model provider."""
