"""Causal language models for `task=lm`."""
